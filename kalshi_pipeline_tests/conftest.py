"""Fixtures shared by every test folder: a private KALSHI_HOME, a private warehouse port and
simulator processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kalshi_pipeline.kalshi.devkey import ensure_dev_key
from kalshi_pipeline.ports import free_port


@pytest.fixture(autouse=True)
def settings_untouched() -> Iterator[None]:
    """A test leaves DAGSTER_HOME and the KALSHI_* settings as it found them: a leaked
    DAGSTER_HOME points later tests (and the `dagster` commands they start) at a folder that no
    longer exists; a leaked KALSHI_* setting (a key path, an environment) changes what a later
    test in the same worker streams from."""
    before = _settings()
    yield
    after = _settings()
    assert after == before, f"this test left these settings changed: {_diff(before, after)}"


def _settings() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if (k == "DAGSTER_HOME" or k.startswith("KALSHI_")) and k != "KALSHI_WAREHOUSE_PORT"
    }


def _diff(before: dict[str, str], after: dict[str, str]) -> str:
    keys = sorted(set(before) | set(after))
    return ", ".join(
        f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in keys if before.get(k) != after.get(k)
    )


@pytest.fixture(autouse=True)
def warehouse_port() -> Iterator[int]:
    """Each test's warehouse owners serve on a port of their own (tests run in parallel);
    processes the test starts inherit it. Set by hand, not with `monkeypatch`: an autouse
    monkeypatch would be undone after every other fixture, so a test's own
    `monkeypatch.setenv("DAGSTER_HOME", ...)` would outlive its `instance_for_test` and leak
    into the next test."""
    port = free_port()
    previous = os.environ.get("KALSHI_WAREHOUSE_PORT")
    os.environ["KALSHI_WAREHOUSE_PORT"] = str(port)
    try:
        yield port
    finally:
        if previous is None:
            os.environ.pop("KALSHI_WAREHOUSE_PORT", None)
        else:
            os.environ["KALSHI_WAREHOUSE_PORT"] = previous


@pytest.fixture
def kalshi_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary KALSHI_HOME holding a fresh dev key (tests never use the developer's)."""
    home = tmp_path / "kalshi-home"
    ensure_dev_key(home)
    monkeypatch.setenv("KALSHI_HOME", str(home))
    for var in (
        "KALSHI_ENV",
        "KALSHI_REST_URL",
        "KALSHI_WS_URL",
        "KALSHI_API_KEY_ID",
        "KALSHI_PRIVATE_KEY_PATH",
        "KALSHI_DEV_KEY_TYPE",
        "KALSHI_RATE_TIER",
        "KALSHI_CHANNELS",
        "KALSHI_DUCKDB_PATH",
        "USE_WEBSOCKET_MARKET_DATA",
        "WEBSOCKET_FALLBACK_TO_HTTP",
        "WEBSOCKET_TIMEOUT",
        "WEBSOCKET_MAX_RETRIES",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def sim_factory(kalshi_home: Path, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start simulators in their own processes; all are stopped at the end of the test."""
    from kalshi_pipeline.simulator.process import SimulatorProcess

    started: list[Any] = []

    def start(**kwargs: Any) -> Any:
        kwargs.setdefault("kalshi_home", kalshi_home)
        kwargs.setdefault("seed", 7)
        if kwargs.pop("with_ledger", True):
            kwargs.setdefault("ledger", tmp_path / f"ledger-{len(started)}.jsonl")
        # the book's changes away from the top, which the ticker tests never see, kept few: the
        # whole suite shares two cores (the order-book tests set their own depth)
        kwargs.setdefault("extra_args", ["--book-depth-events", "0.3"])
        sim = SimulatorProcess(**kwargs)
        sim.__enter__()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.__exit__(None, None, None)


# Files in the order they start: `make test` runs them on 3 workers, one file per worker at a
# time (`--dist loadfile`), handed out in collection order (`--no-loadscope-reorder`; by default
# xdist starts files with the most tests first, which left the minutes-long files to run alone
# at the end). The two real `dagster dev` files start first, then the other costly files, most
# costly first (CPU seconds measured one file at a time, Nov 2026, in the comments), so the
# many quick files fill the end evenly and no long file starts late.
_FIRST = (
    "e2e/test_keepalive_dev.py",
    "e2e/test_dagster_dev.py",
    "stream/test_handover.py",  # 112
    "bench/test_bench_smoke.py",  # 94
    "reports/test_report_assets.py",  # 74
    "stream/test_books_live.py",
    "bench/test_books_check.py",
    "warehouse/test_analyst_commands.py",  # 43
    "warehouse/test_server.py",  # 39
    "defs/test_status.py",  # 36
    "stream/test_trade_backfill.py",
    "defs/test_keepalive_sensor.py",  # 28
    "defs/test_stream_op.py",  # 22
    "kalshi/test_decoder_fuzz.py",  # 22
)
_ORDER = ("e2e", "bench", "kalshi", "defs", "warehouse", "reports", "simulator", "stream")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = f"{item.path.parent.name}/{item.path.name}"
        if name in _FIRST:
            return _FIRST.index(name)
        folder = item.path.parent.name
        return len(_FIRST) + (_ORDER.index(folder) if folder in _ORDER else len(_ORDER))

    items.sort(key=rank)  # stable: each file keeps its own order

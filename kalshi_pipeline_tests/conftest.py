"""Fixtures shared by every test folder: a private KALSHI_HOME, a private warehouse port and
simulator processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kalshi_pipeline.kalshi.devkey import ensure_dev_key
from kalshi_pipeline_tests.helpers import free_port


@pytest.fixture(autouse=True)
def warehouse_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """Each test's warehouse owners serve on a port of their own (tests run in parallel);
    processes the test starts inherit it."""
    port = free_port()
    monkeypatch.setenv("KALSHI_WAREHOUSE_PORT", str(port))
    return port


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
        sim = SimulatorProcess(**kwargs)
        sim.__enter__()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.__exit__(None, None, None)

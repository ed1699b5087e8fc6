"""Fixtures for the Dagster layer: a throwaway Dagster instance, a simulator, a DuckDB path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def sim(sim_factory: Any) -> Any:
    return sim_factory(markets=60, rate=80, with_ledger=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "kalshi.duckdb"


def stream_run_config(sim: Any, db: Path, **op_config: Any) -> dict[str, Any]:
    """Run config pointing the stream at `sim` and `db`, as an operator would type it."""
    feed: dict[str, Any] = {"rest_url": sim.rest_url, "ws_url": sim.ws_url}
    feed.update(op_config.pop("feed", {}))
    config: dict[str, Any] = {
        "resources": {
            "kalshi_feed": {"config": feed},
            "warehouse": {"config": {"path": str(db)}},
        }
    }
    if "rotate_after_s" in op_config:
        # no keep-alive sensor runs in these tests to start a successor: end at rotation
        op_config.setdefault("rotation_wait_s", 0)
    if op_config:
        config["ops"] = {"stream_ticks": {"config": op_config}}
    return config

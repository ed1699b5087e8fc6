from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.stream.config import Mode, Scope, StreamConfig
from kalshi_pipeline.stream.engine import Engine


def config_for(sim: Any, db: Path, **overrides: Any) -> StreamConfig:
    mode = overrides.pop("mode", Mode.WEBSOCKET)
    base = StreamConfig(
        mode=Mode(mode),
        database=db,
        kalshi=KalshiSettings.for_env("local", rest_url=sim.rest_url, ws_url=sim.ws_url),
        websocket_timeout_s=10.0,
        backoff_base_s=0.2,
        backoff_cap_s=2.0,
        healthy_after_s=5.0,
        flush_interval_ms=100,
        scope=overrides.pop("scope", Scope()),
    )
    return base.with_(**overrides)


@pytest.fixture
def engines() -> Iterator[Callable[[StreamConfig], Engine]]:
    """Start engines in this process; any left running are stopped at the end."""
    started: list[Engine] = []

    def start(config: StreamConfig) -> Engine:
        engine = Engine(config).start()
        started.append(engine)
        return engine

    yield start
    for engine in started:
        engine.stop()

"""Failure paths of the engine: bad credentials, terminal server errors, bad paths, signals."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kalshi_pipeline.kalshi.devkey import generate_private_key_pem, write_private_key
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.stream.config import StreamConfig
from kalshi_pipeline.stream.engine import Engine
from kalshi_pipeline.warehouse import WarehouseError
from kalshi_pipeline.warehouse.paths import landing_folder
from kalshi_pipeline_tests.helpers import feed_events, query, wait_for, wait_for_ticks
from kalshi_pipeline_tests.stream.conftest import config_for
from kalshi_pipeline_tests.stream.support import kinds

pytestmark = pytest.mark.timeout(180)


def test_wrong_credentials_back_off_and_say_so(sim_factory, engines, tmp_path):
    sim = sim_factory(markets=100, rate=50)
    key = tmp_path / "stranger.pem"
    write_private_key(key, generate_private_key_pem())
    settings = KalshiSettings.for_env(
        "local",
        rest_url=sim.rest_url,
        ws_url=sim.ws_url,
        api_key_id="00000000-0000-0000-0000-000000000000",
        private_key_path=key,
    )
    db = tmp_path / "k.duckdb"
    engines(config_for(sim, db, kalshi=settings, fallback_to_http=False))
    failures = wait_for(
        lambda: (
            (rows := [r for r in feed_events(db) if r[1:3] == ("websocket", "auth_failed")])
            and len(rows) >= 3
            and rows
        ),
        timeout=90,
        interval=0.5,
        what="three refused handshakes",
    )
    assert "NOT_FOUND" in failures[0][3] and "KALSHI_API_KEY_ID" in failures[0][3]
    gaps = [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(failures)]
    assert min(gaps) >= 4.5, f"a 401 must not be retried in a tight loop: {gaps}"
    polled = [r for r in feed_events(db) if r[1:3] == ("http", "auth_failed")]
    assert polled and "without a signature" in polled[0][3]  # market data is public


@pytest.mark.parametrize("fault", ["channel_error", "buffer_overflow"])
def test_terminal_server_errors_resubscribe_and_the_stream_goes_on(
    sim_factory, engines, tmp_path, fault
):
    sim = sim_factory(markets=200, rate=200)
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db))
    wait_for(lambda: engine.stats.ticks_stored_ws > 0, timeout=30, what="first ticks")
    sim.set_faults(**{fault: True})
    wait_for(lambda: "resubscribe" in kinds(db), timeout=30, what="a resubscription")
    after = engine.stats.ticks_stored_ws
    wait_for(lambda: engine.stats.ticks_stored_ws > after + 50, timeout=30, what="ticks again")
    assert engine.stats.reconnects == 0


def test_an_unwritable_database_path_fails_at_start_naming_it(kalshi_home, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    config = StreamConfig(database=blocker / "k.duckdb")
    with pytest.raises(WarehouseError) as err:
        Engine(config).start()
    assert str(blocker) in str(err.value)


def test_sigterm_stops_reading_flushes_and_records_the_stop(sim_factory, tmp_path):
    sim = sim_factory(markets=200, rate=300)
    db = tmp_path / "data" / "k.duckdb"
    env = dict(os.environ, KALSHI_REST_URL=sim.rest_url, KALSHI_WS_URL=sim.ws_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kalshi_pipeline.cli", "stream", "--database", str(db), "--quiet"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_ticks(db, 200, "ticks stored")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)  # the contract: out within 10 s
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "summary:" in err and "backlog_bytes=0" in err
    events = feed_events(db)
    assert events[-1][2] == "stop"
    landing = landing_folder(db)
    positions = dict(query(db, "SELECT segment, position FROM landing_positions"))
    for seg in landing.iterdir():
        assert positions.get(seg.stem) == seg.stat().st_size, f"{seg.name} not fully loaded"


def test_the_predecessors_variables_are_honoured_as_defaults(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("USE_WEBSOCKET_MARKET_DATA", "false")
    monkeypatch.setenv("WEBSOCKET_FALLBACK_TO_HTTP", "false")
    monkeypatch.setenv("WEBSOCKET_TIMEOUT", "12")
    monkeypatch.setenv("WEBSOCKET_MAX_RETRIES", "5")
    monkeypatch.setenv("WEBSOCKET_DEBUG", "true")
    config = StreamConfig.from_env()
    assert (
        config.mode.value,
        config.fallback_to_http,
        config.websocket_timeout_s,
        config.max_retries,
        config.debug,
    ) == ("http", False, 12.0, 5, True)
    assert StreamConfig.from_env(mode="both").mode.value == "both"
    monkeypatch.setenv("WEBSOCKET_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="WEBSOCKET_TIMEOUT"):
        StreamConfig.from_env()

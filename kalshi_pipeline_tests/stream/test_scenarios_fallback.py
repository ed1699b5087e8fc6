"""Fallback to polling and back, and polling through 429 storms and 5xx spells.

Pass or fail is decided by what is in DuckDB and the ledger, never by timing."""

from __future__ import annotations

import time

import pytest

from kalshi_pipeline.stream.config import Mode
from kalshi_pipeline_tests.helpers import (
    feed_events,
    query,
    wait_for,
)
from kalshi_pipeline_tests.stream.conftest import config_for
from kalshi_pipeline_tests.stream.support import kinds

pytestmark = pytest.mark.timeout(240)


def test_silent_socket_falls_back_to_polling_and_back_without_a_gap(sim_factory, engines, tmp_path):
    sim = sim_factory(markets=300, rate=100)
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db, websocket_timeout_s=3, poll_interval_s=0.5))
    wait_for(lambda: "reconcile" in kinds(db), timeout=30, what="start-up reconciliation")
    silence_from = time.time()
    sim.set_faults(silence_s=8)
    wait_for(lambda: "fallback_end" in kinds(db), timeout=90, interval=0.5, what="fallback end")
    rows = feed_events(db)
    order = [r[2] for r in rows]
    start = order.index("fallback_start")
    end = order.index("fallback_end")
    assert "silence" in order[:start]
    between = order[start:end]
    assert "subscribe" in between and "reconcile" in between[between.index("subscribe") :]
    t_start, t_end = rows[start][0].timestamp(), rows[end][0].timestamp()
    assert t_start >= silence_from
    http = query(
        db,
        "SELECT count(*) FROM ticks WHERE source = 'http' AND epoch(received_at) BETWEEN ? AND ?",
        [t_start, t_end],
    )[0][0]
    assert http > 0, "polling stored changes during the fallback window"
    # no moment without a running feed: the silence was detected while the socket was the
    # feed, polling started then, and stopped only after the socket was back and reconciled
    assert not engine.stats.polling
    assert engine.stats.ws_connected


def test_refused_handshakes_at_start_fall_back_then_return(sim_factory, engines, tmp_path):
    sim = sim_factory(markets=300, rate=100, extra_args=["--refuse-handshakes-s", "20"])
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db, max_retries=3, poll_interval_s=0.5))
    wait_for(lambda: "fallback_start" in kinds(db), timeout=30, what="fallback start")
    wait_for(
        lambda: query(db, "SELECT count(*) FROM ticks WHERE source='http'")[0][0] > 0,
        timeout=30,
        what="polled ticks",
    )
    wait_for(lambda: "fallback_end" in kinds(db), timeout=90, interval=0.5, what="fallback end")
    order = kinds(db)
    assert order.count("connect_failed") >= 3
    assert order.index("fallback_start") < order.index("subscribe") < order.index("fallback_end")
    wait_for(lambda: engine.stats.ticks_stored_ws > 0, timeout=30, what="socket ticks")


def test_429_storms_and_5xx_spells_slow_polling_down_and_it_recovers(
    sim_factory, engines, tmp_path
):
    sim = sim_factory(markets=300, rate=100)
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db, mode=Mode.HTTP, poll_interval_s=0.5))
    wait_for(lambda: engine.stats.ticks_stored_http > 0, timeout=30, what="first polled ticks")
    sim.set_faults(http_429_s=3)
    wait_for(lambda: "rate_limited" in kinds(db), timeout=60, what="rate limiting recorded")
    sim.set_faults(http_5xx_s=3)
    wait_for(lambda: "server_error" in kinds(db), timeout=60, what="5xx recorded")
    before = engine.stats.ticks_stored_http
    wait_for(lambda: engine.stats.ticks_stored_http > before, timeout=60, what="polling resumed")
    engine.check()

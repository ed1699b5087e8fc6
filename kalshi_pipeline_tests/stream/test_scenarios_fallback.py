"""Fallback to polling and back, and polling through 429 storms and 5xx spells.

Pass or fail is decided by what is in DuckDB and the ledger, never by timing."""

from __future__ import annotations

import time

import pytest

from kalshi_pipeline.stream.config import Mode
from kalshi_pipeline.warehouse import connect
from kalshi_pipeline.warehouse.coverage import build_feed_coverage
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
    # coverage: the socket degraded (silence) while polling covered it; the only moment with
    # no feed is from the silence being noticed to polling starting
    with connect(db) as con:
        build_feed_coverage(con, stream_alive=True)
    coverage = query(
        db,
        "SELECT source, state, reason, started_at, ended_at FROM feed_coverage "
        "WHERE started_at >= ? ORDER BY started_at, source",
        [rows[order.index("silence")][0]],
    )
    fell_back, came_back = rows[start][0], rows[end][0]
    # polling covered the fallback window: live, or degraded where a pass ran long (a loaded
    # machine stretches passes beyond poll_interval_s)
    http = [c for c in coverage if c[0] == "http"]
    assert http and http[0][3] == fell_back and http[-1][4] == came_back, coverage
    assert all(c[1] == "live" or c[2] == "rate_limit" for c in http), http
    down = [c for c in coverage if c[1] == "down"]
    assert [(c[0], c[2], c[4]) for c in down] == [("websocket", "silence", fell_back)]
    assert ("websocket", "degraded", "silence") in [c[:3] for c in coverage]
    assert coverage[-1][:3] == ("websocket", "live", None) and coverage[-1][4] is None


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
    with connect(db) as con:
        limited = [
            iv for iv in build_feed_coverage(con, stream_alive=True) if iv.state == "degraded"
        ]
    assert limited and all((iv.source, iv.reason) == ("http", "rate_limit") for iv in limited)
    sim.set_faults(http_5xx_s=3)
    wait_for(lambda: "server_error" in kinds(db), timeout=60, what="5xx recorded")
    before = engine.stats.ticks_stored_http
    wait_for(lambda: engine.stats.ticks_stored_http > before, timeout=60, what="polling resumed")
    engine.check()

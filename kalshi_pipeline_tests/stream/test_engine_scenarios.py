"""The engine against the real simulator in its own process, compared with the simulator's ledger.

Each test runs a scenario from the stream-engine issue. Pass or fail is decided by what is in
DuckDB and in the ledger, never by timing: scenarios wait for conditions with deadlines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from kalshi_pipeline.stream.config import Mode, Scope
from kalshi_pipeline.stream.landing import Kind, list_segments, read_records
from kalshi_pipeline_tests.helpers import (
    feed_events,
    ledger_key,
    query,
    read_ledger,
    sent_indices,
    stored_ws_keys,
    wait_for,
)
from kalshi_pipeline_tests.stream.conftest import config_for

pytestmark = pytest.mark.timeout(240)


def settle_and_compare(sim: Any, db: Path, engine: Any) -> tuple[Counter[Any], Counter[Any]]:
    """Pause the exchange, wait until the engine has stored everything it was sent, compare."""
    sim.set_faults(pause_updates=True)
    indices = sent_indices(sim.sessions())
    top = max(indices, default=-1)

    def flushed() -> list[dict[str, Any]] | None:
        lines = read_ledger(sim.ledger_path)
        return lines if len(lines) > top else None

    ledger = wait_for(flushed, timeout=10, what="the ledger flushed")
    expected = Counter(ledger_key(ledger[i]) for i in indices)

    def caught_up() -> bool:
        return sum(stored_ws_keys(db).values()) >= sum(expected.values())

    wait_for(caught_up, timeout=60, interval=0.5, what="every sent frame stored")
    return expected, stored_ws_keys(db)


def kinds(db: Path) -> list[str]:
    return [row[2] for row in feed_events(db)]


def test_websocket_mode_stores_every_change_sent_exactly_once(sim_factory, engines, tmp_path):
    sim = sim_factory(markets=2000, rate=500)
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db))
    wait_for(lambda: engine.stats.ticks_stored_ws > 0, timeout=30, what="first ticks")
    # 30 s at 500 ticks/s: wait until the exchange has published that much while subscribed
    base = len(read_ledger(sim.ledger_path))
    wait_for(
        lambda: len(read_ledger(sim.ledger_path)) >= base + 15_000,
        timeout=90,
        interval=1,
        what="15,000 more published changes",
    )
    expected, stored = settle_and_compare(sim, db, engine)
    assert sum(expected.values()) >= 15_000
    assert stored == expected
    assert engine.stats.parse_errors == 0
    events = kinds(db)
    assert events.index("connect") < events.index("subscribe")
    assert "reconcile" in events


def test_dropped_connections_lose_nothing_sent_while_connected(sim_factory, engines, tmp_path):
    sim = sim_factory(markets=500, rate=200)
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db))
    wait_for(lambda: engine.stats.ticks_stored_ws > 0, timeout=30, what="first ticks")
    sim.set_faults(drop_every_s=5)
    wait_for(
        lambda: len(sim.sessions()) >= 12,
        timeout=120,
        interval=1,
        what="a minute of connections dropped every 5 s",
    )
    sim.set_faults(drop_every_s=0)
    expected, stored = settle_and_compare(sim, db, engine)
    assert stored == expected
    events = kinds(db)
    closed_sessions = [s for s in sim.sessions() if s.get("closed_at_ms")]
    assert events.count("disconnect") >= len(closed_sessions) - 1 >= 10
    assert events.count("subscribe") >= 12
    assert events.count("reconcile") >= 11  # one after every reconnect


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


def test_hourly_rollover_streams_new_markets_without_a_restart(sim_factory, engines, tmp_path):
    sim = sim_factory(markets=200, rate=200, market_lifetime="12s")
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db, scope=Scope.of(series=["KXSIMHOURLY"])))
    wait_for(lambda: engine.stats.ticks_stored_ws > 0, timeout=30, what="first ticks")
    from kalshi_pipeline.kalshi.rest import RestClient

    with RestClient(engine.config.kalshi, sign=False) as client:
        first = {m.ticker for m in client.get_markets(series_ticker="KXSIMHOURLY")}

    def new_markets_streamed() -> set[str]:
        now = {
            r[0]
            for r in query(db, "SELECT DISTINCT market_ticker FROM ticks WHERE source='websocket'")
        }
        return now - first

    fresh = wait_for(new_markets_streamed, timeout=90, interval=1, what="ticks of new markets")
    assert all(t.startswith("KXSIMHOURLY-") for t in fresh)
    assert "markets_added" in kinds(db)
    assert engine.stats.reconnects == 0


def test_http_mode_stores_only_changes_and_ends_equal_to_the_exchange(
    sim_factory, engines, tmp_path
):
    sim = sim_factory(markets=400, rate=100)
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db, mode=Mode.HTTP, poll_interval_s=0.5))
    wait_for(
        lambda: query(db, "SELECT count(*) FROM poll_passes")[0][0] >= 8,
        timeout=60,
        what="eight passes",
    )
    sim.set_faults(pause_updates=True)
    passes = query(db, "SELECT count(*) FROM poll_passes")[0][0]
    wait_for(
        lambda: query(db, "SELECT count(*) FROM poll_passes")[0][0] >= passes + 3,
        timeout=60,
        what="three passes after the pause",
    )
    seen, changed = query(db, "SELECT sum(markets_seen), sum(markets_changed) FROM poll_passes")[0]
    rows = query(db, "SELECT count(*) FROM ticks WHERE source='http'")[0][0]
    assert rows == changed < seen
    # consecutive stored states of a market always differ
    repeats = query(
        db,
        """
        SELECT count(*) FROM (
          SELECT market_ticker, yes_bid, yes_ask, yes_bid_size, yes_ask_size, price, volume,
                 open_interest,
                 lag(struct_pack(yes_bid, yes_ask, yes_bid_size, yes_ask_size, price, volume,
                                 open_interest)) OVER (PARTITION BY market_ticker
                                                       ORDER BY landing_segment, landing_offset)
                 AS prev
          FROM ticks WHERE source='http')
        WHERE prev = struct_pack(yes_bid, yes_ask, yes_bid_size, yes_ask_size, price, volume,
                                 open_interest)""",
    )[0][0]
    assert repeats == 0
    final = {
        r[0]: r[1:]
        for r in query(
            db,
            """
            SELECT market_ticker, yes_bid, yes_ask, volume, open_interest FROM ticks
            WHERE source = 'http'
            QUALIFY row_number() OVER (PARTITION BY market_ticker
                                       ORDER BY landing_segment DESC, landing_offset DESC) = 1""",
        )
    }
    from kalshi_pipeline.kalshi.rest import RestClient

    with RestClient(engine.config.kalshi, sign=False, requests_per_s=100) as client:
        exchange = {
            m.ticker: (m.yes_bid, m.yes_ask, m.volume, m.open_interest)
            for m in client.get_markets(status="open")
        }
    assert exchange and set(exchange) <= set(final)
    assert {t: final[t] for t in exchange} == exchange


def _landing_ticker_frames(landing: Path) -> set[tuple[int, int]]:
    out = set()
    for seg in list_segments(landing):
        records, _, _ = read_records(seg, 0, max_bytes=1 << 30)
        for r in records:
            if r.kind == Kind.WS_FRAME and r.payload.startswith(b'{"type":"ticker"'):
                out.add((seg.segment_id, r.offset))
    return out


def test_sigkill_mid_stream_then_restart_stores_everything_logged_once(sim_factory, tmp_path):
    sim = sim_factory(markets=500, rate=300)
    db = tmp_path / "data" / "k.duckdb"
    env = dict(os.environ, KALSHI_REST_URL=sim.rest_url, KALSHI_WS_URL=sim.ws_url)
    cmd = [
        sys.executable,
        "-m",
        "kalshi_pipeline.cli",
        "stream",
        "--mode",
        "websocket",
        "--database",
        str(db),
        "--quiet",
    ]
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: db.exists() and query(db, "SELECT count(*) FROM ticks")[0][0] > 500,
            timeout=60,
            interval=0.5,
            what="ticks stored by the first process",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    logged = _landing_ticker_frames(db.parent / "landing")
    second = subprocess.Popen([*cmd, "--seconds", "6"], env=env, stderr=subprocess.PIPE, text=True)
    _out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    stored = query(
        db,
        "SELECT landing_segment, landing_offset, count(*) FROM ticks "
        "WHERE source='websocket' GROUP BY 1, 2",
    )
    assert all(n == 1 for _s, _o, n in stored), "a frame was stored twice"
    assert logged <= {(s, o) for s, o, _n in stored}, "a logged frame was never stored"


def test_database_held_by_another_process_loses_nothing(sim_factory, engines, tmp_path):
    sim = sim_factory(markets=500, rate=300)
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db))
    wait_for(lambda: engine.stats.ticks_stored_ws > 0, timeout=30, what="first ticks")
    hold = (
        "import sys, time, duckdb\n"
        "con = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)"
    )
    rss_before = psutil.Process().memory_info().rss
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        wait_for(
            lambda: engine.stats.backlog_bytes > 1_000_000,
            timeout=60,
            interval=1,
            what="a backlog while the database is held",
        )
        peak = psutil.Process().memory_info().rss
        holder.wait(timeout=120)
    finally:
        holder.kill()
    wait_for(lambda: engine.stats.backlog_bytes == 0, timeout=60, what="backlog drained")
    expected, stored = settle_and_compare(sim, db, engine)
    assert stored == expected
    assert peak - rss_before < 200 * 1024 * 1024, "memory grew with the backlog"
    assert {"database_busy", "database_free"} <= set(kinds(db))


def test_malformed_frames_are_counted_and_never_stop_the_stream(sim_factory, engines, tmp_path):
    sim = sim_factory(markets=300, rate=300)
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db))
    sim.set_faults(malformed_rate=0.01)
    wait_for(
        lambda: engine.stats.parse_errors + engine.stats.unknown_frames >= 10,
        timeout=90,
        interval=1,
        what="malformed frames seen",
    )
    expected, stored = settle_and_compare(sim, db, engine)
    assert stored == expected  # every real change stored, no row from a bad frame
    assert (
        query(
            db, "SELECT count(*) FROM feed_events WHERE kind IN ('parse_error', 'unknown_frame')"
        )[0][0]
        >= 10
    )
    engine.check()

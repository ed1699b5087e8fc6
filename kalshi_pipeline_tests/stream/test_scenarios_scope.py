"""Scope and polling: the hourly rollover, and http mode's change-only storage.

Pass or fail is decided by what is in DuckDB and the ledger, never by timing."""

from __future__ import annotations

import pytest

from kalshi_pipeline.stream.config import Mode, Scope
from kalshi_pipeline_tests.helpers import (
    query,
    wait_for,
)
from kalshi_pipeline_tests.stream.conftest import config_for
from kalshi_pipeline_tests.stream.support import kinds

pytestmark = pytest.mark.timeout(240)


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

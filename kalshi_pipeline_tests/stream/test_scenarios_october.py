"""Kalshi as of October 2026 (OpenAPI 3.34.0), end to end against the simulator.

Compression on and off both store every frame sent, with Kalshi's `sending_ts_ms` as `sent_at`;
markets keep their settlement bounds and shard; a `determined` result survives `settled`.
Pass or fail is decided by what is in DuckDB, the ledger and the landing log, never by timing.
"""

from __future__ import annotations

import pytest

from kalshi_pipeline.kalshi.messages import MarketLifecycle, decode_frame
from kalshi_pipeline.stream.landing import Kind, list_segments, read_records
from kalshi_pipeline.warehouse import Warehouse
from kalshi_pipeline.warehouse.reports import latency_comparison
from kalshi_pipeline_tests.helpers import query, wait_for
from kalshi_pipeline_tests.stream.conftest import config_for
from kalshi_pipeline_tests.stream.support import settle_and_compare

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("compression", [False, True], ids=["uncompressed", "deflate"])
def test_every_frame_is_stored_once_with_its_send_time_compressed_or_not(
    sim_factory, engines, tmp_path, compression
):
    sim = sim_factory(markets=300, rate=300)
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db, websocket_compression=compression))
    wait_for(lambda: engine.stats.ticks_stored_ws >= 300, timeout=60, what="300 ticks stored")
    expected, stored = settle_and_compare(sim, db, engine)
    assert stored == expected
    connects = query(db, "SELECT detail FROM feed_events WHERE kind = 'connect'")
    assert connects and all(d.endswith("(permessage-deflate)") == compression for (d,) in connects)

    # every WebSocket tick carries Kalshi's send time, no earlier than the market change it
    # reports and no later than its receipt; REST ticks have none
    (ws,) = query(
        db,
        "SELECT count(*), count(sent_at), count(*) FILTER (WHERE sent_at < exchange_ts "
        "OR sent_at > received_at + INTERVAL 1 SECOND) FROM ticks WHERE source = 'websocket'",
    )
    assert ws[0] == ws[1] > 0 and ws[2] == 0
    assert query(db, "SELECT count(sent_at) FROM ticks WHERE source = 'http'") == [(0,)]

    assert engine.stats.snapshot()["lag_p50_ms"] is not None
    with Warehouse(db).connect(read_only=True) as con:
        rows = {(r["metric"], r["source"]): r for r in latency_comparison(con)}
    assert rows[("sent_to_received", "websocket")]["count"] == ws[0]
    assert ("exchange_to_received", "websocket") in rows  # the existing metrics stay


def test_markets_keep_settlement_bounds_and_shard_and_a_determined_result_survives_settled(
    sim_factory, engines, tmp_path
):
    sim = sim_factory(markets=200, rate=200, market_lifetime="12s")
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db))

    def finalized() -> int:
        return query(db, "SELECT count(*) FROM markets WHERE status = 'finalized'")[0][0]

    wait_for(lambda: finalized() >= 3, timeout=120, interval=1, what="three settled markets")
    engine.stop()

    bounds = query(
        db,
        "SELECT count(*), count(*) FILTER (WHERE settlement_bounds_type NOT IN "
        "('default', 'floor')), count(exchange_index) FROM markets WHERE updated_by = 'http'",
    )
    total, unknown, with_index = bounds[0]
    assert total > 0 and unknown == 0 and with_index == total
    floors = query(
        db,
        "SELECT market_ticker, settlement_floor_dollars FROM markets "
        "WHERE settlement_bounds_type = 'floor'",
    )
    assert floors, "the simulator lists KXSIMRAIN as floor markets"
    assert all(t.startswith("KXSIMRAIN") and f is not None for t, f in floors)
    shards = {r[0] for r in query(db, "SELECT DISTINCT exchange_index FROM markets")}
    assert len(shards) >= 2

    # the result each market got from its `determined` frame, read back from the landing log
    determined: dict[str, str] = {}
    for seg in list_segments(engine.config.landing):
        for rec in read_records(seg, 0)[0]:
            if rec.kind != Kind.WS_FRAME or b"market_lifecycle_v2" not in rec.payload[:40]:
                continue
            msg = decode_frame(rec.payload)
            if isinstance(msg, MarketLifecycle) and msg.event_type == "determined":
                determined[msg.market_ticker] = msg.result or ""
    assert determined
    stored = dict(
        query(
            db,
            "SELECT market_ticker, result FROM markets WHERE status = 'finalized' "
            "AND settlement_value_dollars IS NOT NULL",
        )
    )
    settled = query(db, "SELECT market_ticker, result FROM markets WHERE status = 'finalized'")
    assert any(t in determined for t, _ in settled), "a market both determined and settled"
    for ticker, result in settled:
        if ticker in determined:
            assert result == determined[ticker], ticker
            assert ticker in stored

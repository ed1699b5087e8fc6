"""`feed_coverage` rows of the order-book and trade channels: `degraded` (`sequence_gap`) from a
sequence gap until its resync, backfill, the socket's end or the engine's stop.

Feed events are written into a real DuckDB file as the feed writes them; times are seconds
after T0 and `now` is fixed, so every interval is exact. (The engine tests in
stream/test_books_live.py derive the same rows from a real gap.)"""

from __future__ import annotations

from pathlib import Path

from kalshi_pipeline.warehouse import connect
from kalshi_pipeline.warehouse.coverage import REASONS, SEQUENCE_GAP, build_feed_coverage
from kalshi_pipeline_tests.warehouse.test_coverage import T0, WS, at, write

SUBSCRIBED: tuple[float, str, str, str] = (
    0.5,
    "websocket",
    "subscribe",
    "ticker (all markets) and market_lifecycle_v2",
)


Row = tuple[float, str, str, str]


def gap(
    s: float, channel: str, sid: int, expected: int, got: int, markets: str, kind: str = ""
) -> Row:
    what = f" ({kind})" if kind else ""
    detail = (
        f"{channel} sid {sid}: seq {expected} expected, {got} received{what}; markets: {markets}"
    )
    return (s, "websocket", "sequence_gap", detail)


def resynced(s: float, sid: int, markets: list[str]) -> Row:
    detail = f"orderbook_delta sid {sid}: fresh snapshots for {len(markets)} markets: " + ",".join(
        markets
    )
    return (s, "websocket", "book_resynced", detail)


def rows(db: Path, now_s: float, *, alive: bool = True) -> list[tuple[object, ...]]:
    """(channel, state, reason, start s, end s or None, detail) of the non-ticker rows."""
    with connect(db) as con:
        build_feed_coverage(con, stream_alive=alive, now=at(now_s))
        found = con.execute(
            "SELECT channel, state, reason, epoch_ms(started_at), epoch_ms(ended_at), detail "
            "FROM feed_coverage WHERE channel IN ('orderbook_delta', 'trade') "
            "ORDER BY started_at, channel"
        ).fetchall()
    t0 = T0.timestamp() * 1000
    return [
        (r[0], r[1], r[2], (r[3] - t0) / 1000, None if r[4] is None else (r[4] - t0) / 1000, r[5])
        for r in found
    ]


def test_sequence_gap_is_a_known_reason() -> None:
    assert "sequence_gap" in REASONS


def test_a_book_gap_is_degraded_until_its_resync(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            (0.0, "engine", "start", WS),
            SUBSCRIBED,
            gap(10.0, "orderbook_delta", 2, 41, 43, "KX-A,KX-B"),
            gap(10.5, "orderbook_delta", 2, 50, 50, "KX-A,KX-B", "duplicate"),
            resynced(11.0, 2, ["KX-A", "KX-B"]),
            gap(20.0, "orderbook_delta", 3, 7, 8, "KX-C"),
            resynced(21.5, 3, ["KX-C"]),
        ],
    )
    assert rows(db, 30.0) == [
        (
            "orderbook_delta",
            "degraded",
            "sequence_gap",
            10.0,
            11.0,
            "sid 2: seq 41-42 lost; markets: KX-A,KX-B | seq 50 duplicate (expected 50); "
            "markets: KX-A,KX-B",
        ),
        (
            "orderbook_delta",
            "degraded",
            "sequence_gap",
            20.0,
            21.5,
            "sid 3: seq 7 lost; markets: KX-C",
        ),
    ]


def test_a_gap_left_open_ends_with_the_socket_or_the_engine(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            (0.0, "engine", "start", WS),
            SUBSCRIBED,
            gap(5.0, "orderbook_delta", 1, 3, 4, "KX-A"),
            (6.0, "websocket", "disconnect", "WebSocket closed by the server (code 1001)"),
            (7.0, "websocket", "subscribe", "ticker (all markets) and market_lifecycle_v2"),
            gap(8.0, "orderbook_delta", 1, 9, 12, "KX-A"),
            (9.0, "engine", "stop", "requested"),
            (20.0, "engine", "start", WS),
            (20.5, "websocket", "subscribe", "ticker (all markets) and market_lifecycle_v2"),
            gap(25.0, "orderbook_delta", 1, 2, 3, "KX-B"),
            (27.0, "websocket", "markets_added", "orderbook_delta: KX-C"),
        ],
    )
    assert [r[:5] for r in rows(db, 40.0)] == [
        ("orderbook_delta", "degraded", "sequence_gap", 5.0, 6.0),
        ("orderbook_delta", "degraded", "sequence_gap", 8.0, 9.0),
        ("orderbook_delta", "degraded", "sequence_gap", 25.0, None),  # still waiting
    ]
    # no engine serves the file any more: the open one ends with the last thing recorded
    assert [r[4] for r in rows(db, 40.0, alive=False)] == [6.0, 9.0, 27.0]


def test_a_trade_gap_is_degraded_until_its_backfill_and_a_resubscribe_ends_a_book_gap(
    tmp_path: Path,
) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            (0.0, "engine", "start", WS),
            SUBSCRIBED,
            gap(3.0, "trade", 4, 10, 11, "all"),
            gap(4.0, "orderbook_delta", 5, 1, 2, "KX-A"),
            (6.0, "http", "trades_backfilled", "trade: 1 trades (1 new) between a and b"),
            (7.0, "websocket", "resubscribe", "orderbook_delta sid 5: error 25; 1 markets"),
        ],
    )
    assert [r[:6] for r in rows(db, 10.0)] == [
        ("trade", "degraded", "sequence_gap", 3.0, 6.0, "sid 4: seq 10 lost; markets: all"),
        (
            "orderbook_delta",
            "degraded",
            "sequence_gap",
            4.0,
            7.0,
            "sid 5: seq 1 lost; markets: KX-A",
        ),
    ]


def test_a_subscription_the_exchange_ended_is_degraded_until_its_markets_resync(
    tmp_path: Path,
) -> None:
    """Error 25 on an order-book sid: its `sequence_gap` ("none received (buffer overflow)") is
    followed by the resubscription of its markets, which does not end it: the old sid's
    `book_resynced` (the fresh snapshots on the new sid) does. One with an earlier gap of the
    sid still open extends that row."""
    db = tmp_path / "k.duckdb"
    overflow = "orderbook_delta sid 5: seq 9 expected, none received (buffer overflow); "
    write(
        db,
        [
            (0.0, "engine", "start", WS),
            SUBSCRIBED,
            (2.0, "websocket", "sequence_gap", overflow + "markets: KX-A,KX-B"),
            (2.1, "websocket", "resubscribe", "orderbook_delta sid 5: error 25; 2 markets"),
            resynced(4.0, 5, ["KX-A", "KX-B"]),
            gap(5.0, "orderbook_delta", 6, 3, 4, "KX-A,KX-B"),
            (
                6.0,
                "websocket",
                "sequence_gap",
                overflow.replace("sid 5", "sid 6") + "markets: KX-A",
            ),
            (6.1, "websocket", "resubscribe", "orderbook_delta sid 6: error 25; 1 markets"),
            resynced(8.0, 6, ["KX-A"]),
        ],
    )
    ended = "seq 9 on lost (subscription ended: buffer overflow)"
    # the plain gap pattern (which the bench reads for dropped seqs) does not take it
    assert SEQUENCE_GAP.match(overflow + "markets: KX-A") is None
    assert [r[:6] for r in rows(db, 10.0)] == [
        (
            "orderbook_delta",
            "degraded",
            "sequence_gap",
            2.0,
            4.0,
            f"sid 5: {ended}; markets: KX-A,KX-B",
        ),
        (
            "orderbook_delta",
            "degraded",
            "sequence_gap",
            5.0,
            8.0,
            f"sid 6: seq 3 lost; markets: KX-A,KX-B | {ended}; markets: KX-A",
        ),
    ]


def test_the_detail_stays_within_500_characters(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    markets = ",".join(f"KXMANY-26NOV27-T{n}" for n in range(100))
    write(
        db,
        [(0.0, "engine", "start", WS), SUBSCRIBED, gap(1.0, "orderbook_delta", 1, 5, 9, markets)],
    )
    (row,) = rows(db, 5.0)
    assert len(str(row[5])) == 500
    assert str(row[5]).startswith("sid 1: seq 5-8 lost; markets: KXMANY-26NOV27-T0,")

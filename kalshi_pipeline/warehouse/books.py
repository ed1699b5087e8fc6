"""Order-book queries: the book of a market at a time, top-of-book history, trades between times.

Each query is a DuckDB table macro, created by the schema migration, so an analyst calls it by
name in `kalshi-pipeline sql` (`FROM book_at('KXBTCD-...', TIMESTAMPTZ '2026-11-27 12:00:00Z',
depth := 10)`), and a Python function here, called with a warehouse client (`connect()`, which
works whether the stream owns the file or not). The Python functions call the macros, except
`book_at`, which follows the same rules in a few small statements (DuckDB plans the macro's one
large statement in several times the time it takes to run it); the tests hold the two equal.

How a book is rebuilt (the rules the macros share):
- Times are receive times (`received_at`): the book at T is the book the recorder held at T.
- A frame's engine is the low 22 bits of its `landing_segment` (the pid of the process that
  landed it); `(landing_segment, landing_offset)` orders one engine's frames exactly. An engine
  holds one WebSocket connection at a time, and on every subscription Kalshi sends a market's
  snapshot before any of its deltas, so the deltas that follow a snapshot on the same connection
  are the same engine's deltas of that market, with the same sid, after the snapshot's position.
  After a reconnect (sids restart at 1) the new connection's snapshot starts a new run.
- Two engines receive the same books during a handover (each its own connection, sid and seq):
  the book at T follows the engine that received the market's latest frame at or before T (the
  one still running), from its latest snapshot.
- A book is valid at T unless, after its snapshot and up to T, the feed of its engine recorded
  a `sequence_gap` on the order-book channel naming the market (or the whole sid) or a
  `book_invalid` of the market (or of its subscription, naming it), or any feed recorded the
  market's `markets_removed` from the order books (`orderbook_delta: <ticker>`: determined,
  settled or deactivated; the recorder stopped following it, so the book it held is not the
  exchange's any more). A later snapshot (a resync, or the market added again) starts a valid
  book again.
- NO levels are bids at NO-leg prices (the stream subscribes with `use_yes_price` false): the
  best YES ask is 1 minus the best NO bid, its size that level's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

ENGINE_BITS = 4194303  # 2**22 - 1: the pid part of a landing_segment (stream/landing.py)


def _engine(t: str) -> str:
    return f"({t}.landing_segment & {ENGINE_BITS})"


def _pos(t: str) -> str:
    """A frame's position within its engine, one sortable value (segment, then offset)."""
    return f"(({t}.landing_segment::HUGEINT << 32) + {t}.landing_offset)"


# A feed event (e, beside the book's base b) that breaks the book of `ticker`: a gap on an
# order-book subscription naming the market (or naming no market, or "all": the whole sid), or the
# market's book found inconsistent (alone, or with the other markets of its subscription), each
# recorded by the feed of the engine the book follows (or of no known engine: before schema
# version 4); or the market removed from the order books (the recorder stopped following it).
# The feed's wording: "<channel> sid <sid>: seq <n> expected, <m> received; markets: T1,T2",
# "<ticker>: <why>", "orderbook_delta sid <sid>: <why>; markets: T1,T2" and
# "orderbook_delta: <ticker>".
_BREAKS = """((e.kind = 'book_invalid' AND starts_with(e.detail, ticker || ':')
             AND (e.engine IS NULL OR e.engine = b.engine))
            OR (e.kind = 'markets_removed' AND e.detail = 'orderbook_delta: ' || ticker)
            OR (e.kind IN ('sequence_gap', 'book_invalid')
                AND (e.engine IS NULL OR e.engine = b.engine)
                AND starts_with(e.detail, 'orderbook_delta sid ')
                AND CASE WHEN trim(split_part(e.detail, 'markets:', 2)) IN ('', 'all')
                THEN starts_with(e.detail, 'orderbook_delta sid ' || b.sid || ':')
                ELSE contains(',' || replace(split_part(e.detail, 'markets:', 2), ' ', '') || ',',
                              ',' || ticker || ',') END))"""

MACROS: list[str] = [
    # Where a market's book at `at_time` starts: the latest snapshot or keyframe, at or before
    # `at_time`, of the engine (and sid) that received the market's latest frame by then. One row
    # (engine, sid, pos, received_at, snapshot_at, yes_levels, no_levels), none before any
    # snapshot. The deltas are read from the newest snapshot or keyframe on (zone maps on
    # received_at skip the rest of the day): an older one is only chosen when another engine's
    # deltas came after the newest (a handover), and those come after it by definition.
    f"""
    CREATE OR REPLACE MACRO book_base(ticker, at_time) AS TABLE
    WITH bases AS MATERIALIZED (
        SELECT {_engine("s")} AS engine, s.sid, {_pos("s")} AS pos, s.received_at,
               s.received_at AS snapshot_at, s.yes_levels, s.no_levels
        FROM book_snapshots s WHERE s.market_ticker = ticker AND s.received_at <= at_time
        UNION ALL
        SELECT {_engine("k")}, k.sid, {_pos("k")}, k.received_at, k.snapshot_at, k.yes_levels,
               k.no_levels
        FROM book_keyframes k WHERE k.market_ticker = ticker AND k.received_at <= at_time),
    newest AS MATERIALIZED (
        SELECT engine, sid, pos, received_at FROM bases ORDER BY received_at DESC, pos DESC
        LIMIT 1),
    recent AS (
        SELECT {_engine("d")} AS engine, d.sid, {_pos("d")} AS pos, d.received_at
        FROM book_deltas_stored d, newest n
        WHERE d.market_ticker = ticker AND d.received_at <= at_time
          AND d.received_at >= n.received_at
        ORDER BY d.received_at DESC, pos DESC LIMIT 1),
    latest AS (
        SELECT engine, sid FROM (FROM newest UNION ALL FROM recent)
        ORDER BY received_at DESC, pos DESC LIMIT 1)
    SELECT b.* FROM bases b
    JOIN latest l ON b.engine = l.engine AND b.sid IS NOT DISTINCT FROM l.sid
    ORDER BY b.pos DESC LIMIT 1
    """,
    # The book of a market at `at_time`: (side, level, price, size), best first per side, YES
    # first; `depth` levels a side (0: all); with `valid` and `snapshot_at` on every row (the
    # reason for an invalid book: book_validity).
    f"""
    CREATE OR REPLACE MACRO book_at(ticker, at_time, depth := 0) AS TABLE
    WITH b AS MATERIALIZED (FROM book_base(ticker, at_time)),
    changes AS (
        SELECT 'yes' AS side, unnest(yes_levels, recursive := true) FROM b
        UNION ALL SELECT 'no' AS side, unnest(no_levels, recursive := true) FROM b
        UNION ALL
        SELECT d.side, d.price, d.delta FROM book_deltas_stored d, b
        WHERE d.market_ticker = ticker AND d.received_at <= at_time
          AND d.received_at >= b.received_at AND {_engine("d")} = b.engine
          AND d.sid IS NOT DISTINCT FROM b.sid AND {_pos("d")} > b.pos),
    book AS (SELECT side, price, sum(size) AS size FROM changes GROUP BY ALL HAVING sum(size) > 0),
    broken AS (
        SELECT count(*) > 0 AS broken FROM feed_events e, b
        WHERE e.source = 'websocket' AND e.occurred_at >= b.snapshot_at
          AND e.occurred_at <= at_time AND {_BREAKS})
    SELECT side, level::INTEGER AS level, price, size, NOT broken.broken AS valid,
           b.snapshot_at
    FROM (SELECT *, row_number() OVER (PARTITION BY side ORDER BY price DESC) AS level FROM book),
         broken, b
    WHERE depth <= 0 OR level <= depth
    ORDER BY side DESC, level
    """,
    # Whether the book of a market at `at_time` can be trusted: one row (snapshot_at, sid,
    # valid, reason); no row when nothing was recorded of the market by then.
    f"""
    CREATE OR REPLACE MACRO book_validity(ticker, at_time) AS TABLE
    WITH b AS MATERIALIZED (FROM book_base(ticker, at_time)),
    broken AS (
        SELECT e.occurred_at, e.kind, e.detail FROM feed_events e, b
        WHERE e.source = 'websocket' AND e.occurred_at >= b.snapshot_at
          AND e.occurred_at <= at_time AND {_BREAKS}
        ORDER BY e.occurred_at LIMIT 1)
    SELECT b.snapshot_at, b.sid, r.kind IS NULL AS valid,
           CASE WHEN r.kind IS NULL THEN NULL
                ELSE r.kind || ' at ' || strftime(r.occurred_at, '%Y-%m-%d %H:%M:%S.%f')
                     || ': ' || r.detail END AS reason
    FROM b LEFT JOIN broken r ON true
    """,
    # Top of book after every order-book frame of a market received from the snapshot in force
    # at `from_time` to `to_time` (engine and pos say whose frame it was; see the module's
    # docstring); yes_bid 0 and yes_ask 1 (size 0) when a side is empty.
    f"""
    CREATE OR REPLACE MACRO book_frames_l1(ticker, from_time, to_time) AS TABLE
    WITH base AS (FROM book_base(ticker, from_time)),
    start AS (SELECT coalesce((SELECT min(received_at) FROM base), from_time) AS t),
    -- runs start at each snapshot and keyframe (a keyframe restates its run's book)
    starts AS MATERIALIZED (
        SELECT {_engine("s")} AS engine, s.sid, {_pos("s")} AS pos, s.received_at,
               s.sent_at AS ts, s.yes_levels, s.no_levels
        FROM book_snapshots s, start
        WHERE s.market_ticker = ticker AND s.received_at >= start.t AND s.received_at <= to_time
        UNION ALL
        SELECT {_engine("k")}, k.sid, {_pos("k")}, k.received_at, NULL, k.yes_levels,
               k.no_levels
        FROM book_keyframes k, start
        WHERE k.market_ticker = ticker AND k.received_at >= start.t AND k.received_at <= to_time),
    deltas AS (
        SELECT {_engine("d")} AS engine, d.sid, {_pos("d")} AS pos, d.received_at,
               d.exchange_ts AS ts, d.side, d.price, d.delta
        FROM book_deltas d, start
        WHERE d.market_ticker = ticker AND d.received_at >= start.t AND d.received_at <= to_time),
    -- each delta belongs to the run of the latest start before it on its engine and sid
    runs AS (
        SELECT d.*, s.pos AS run FROM deltas d ASOF JOIN starts s
        ON d.engine = s.engine AND d.sid IS NOT DISTINCT FROM s.sid AND d.pos > s.pos),
    frames AS (
        SELECT engine, pos AS run, pos, received_at, ts FROM starts
        UNION ALL SELECT engine, run, pos, received_at, ts FROM runs),
    changes AS (
        SELECT engine, pos AS run, pos, 'yes' AS side, unnest(yes_levels, recursive := true)
        FROM starts
        UNION ALL
        SELECT engine, pos AS run, pos, 'no' AS side, unnest(no_levels, recursive := true)
        FROM starts
        UNION ALL SELECT engine, run, pos, side, price, delta FROM runs),
    levels AS (  -- each level's size after every change to it
        SELECT engine, run, side, price, pos,
               sum(change) OVER (PARTITION BY engine, run, side, price ORDER BY pos) AS size
        FROM (SELECT engine, run, side, price, pos, sum(size) AS change FROM changes
              GROUP BY ALL)),
    grid AS (  -- every frame against every price its run has seen
        SELECT f.engine, f.run, f.pos, p.side, p.price FROM frames f
        JOIN (SELECT DISTINCT engine, run, side, price FROM levels) p USING (engine, run)),
    sizes AS (
        SELECT g.engine, g.run, g.pos, g.side, g.price, l.size FROM grid g ASOF JOIN levels l
        ON l.engine = g.engine AND l.run = g.run AND l.side = g.side AND l.price = g.price
           AND g.pos >= l.pos),
    l1 AS (
        SELECT f.received_at, f.ts, f.engine, f.pos,
               max(z.price) FILTER (z.side = 'yes' AND z.size > 0) AS best_yes,
               arg_max(z.size, z.price) FILTER (z.side = 'yes' AND z.size > 0) AS best_yes_size,
               max(z.price) FILTER (z.side = 'no' AND z.size > 0) AS best_no,
               arg_max(z.size, z.price) FILTER (z.side = 'no' AND z.size > 0) AS best_no_size
        FROM frames f LEFT JOIN sizes z ON z.engine = f.engine AND z.run = f.run AND z.pos = f.pos
        GROUP BY f.received_at, f.ts, f.engine, f.run, f.pos)
    SELECT received_at, ts AS exchange_ts, engine, pos,
           coalesce(best_yes, 0)::DECIMAL(10,4) AS yes_bid,
           coalesce(best_yes_size, 0)::DECIMAL(18,2) AS yes_bid_size,
           (1 - coalesce(best_no, 0))::DECIMAL(10,4) AS yes_ask,
           coalesce(best_no_size, 0)::DECIMAL(18,2) AS yes_ask_size
    FROM l1
    """,
    # Top of book from the books, every change between two times: (received_at, exchange_ts,
    # yes_bid, yes_bid_size, yes_ask, yes_ask_size). The first row is the book in force at
    # `from_time` (shown at `from_time`); yes_bid 0 and yes_ask 1 (size 0) when a side is empty.
    """
    CREATE OR REPLACE MACRO top_of_book(ticker, from_time, to_time) AS TABLE
    WITH changed AS (
        SELECT * FROM book_frames_l1(ticker, from_time, to_time)
        WINDOW o AS (ORDER BY received_at, engine, pos)
        QUALIFY row_number() OVER o = 1
             OR (lag(yes_bid) OVER o, lag(yes_bid_size) OVER o, lag(yes_ask) OVER o,
                 lag(yes_ask_size) OVER o)
                IS DISTINCT FROM (yes_bid, yes_bid_size, yes_ask, yes_ask_size)),
    shown AS (
        (SELECT * FROM changed WHERE received_at < from_time
         ORDER BY received_at DESC, engine DESC, pos DESC LIMIT 1)
        UNION ALL SELECT * FROM changed WHERE received_at >= from_time)
    SELECT greatest(received_at, from_time) AS received_at, exchange_ts,
           yes_bid, yes_bid_size, yes_ask, yes_ask_size
    FROM shown ORDER BY received_at, engine, pos
    """,
    # Ticks of the ticker channel between two times whose L1 is not the books' top of book at
    # the tick's exchange time (after some frame of that same millisecond, else after the last
    # frame before it): no row when the two channels agree.
    """
    CREATE OR REPLACE MACRO top_of_book_check(ticker, from_time, to_time) AS TABLE
    WITH frames AS (
        SELECT * FROM book_frames_l1(ticker, from_time, to_time) WHERE exchange_ts IS NOT NULL),
    last_of_ms AS (
        SELECT exchange_ts, yes_bid, yes_bid_size, yes_ask, yes_ask_size FROM frames
        QUALIFY row_number() OVER (PARTITION BY exchange_ts
                                   ORDER BY received_at DESC, engine DESC, pos DESC) = 1),
    t AS (
        SELECT received_at, exchange_ts, yes_bid, yes_bid_size, yes_ask, yes_ask_size
        FROM ticks
        WHERE market_ticker = ticker AND source = 'websocket'
          AND received_at BETWEEN from_time AND to_time
          AND exchange_ts >= (SELECT min(exchange_ts) FROM frames))
    SELECT t.received_at, t.exchange_ts,
           t.yes_bid AS tick_yes_bid, b.yes_bid AS book_yes_bid,
           t.yes_bid_size AS tick_yes_bid_size, b.yes_bid_size AS book_yes_bid_size,
           t.yes_ask AS tick_yes_ask, b.yes_ask AS book_yes_ask,
           t.yes_ask_size AS tick_yes_ask_size, b.yes_ask_size AS book_yes_ask_size
    FROM t ASOF LEFT JOIN last_of_ms b ON t.exchange_ts >= b.exchange_ts
    WHERE NOT EXISTS (
        SELECT 1 FROM frames f
        WHERE f.exchange_ts = t.exchange_ts AND f.yes_bid = t.yes_bid
          AND f.yes_bid_size = t.yes_bid_size AND f.yes_ask = t.yes_ask
          AND f.yes_ask_size = t.yes_ask_size)
      AND (t.yes_bid, t.yes_bid_size, t.yes_ask, t.yes_ask_size)
          IS DISTINCT FROM (b.yes_bid, b.yes_bid_size, b.yes_ask, b.yes_ask_size)
    ORDER BY t.received_at
    """,
    # Trades executed between two times (Kalshi's trade time; the receive time when it is
    # missing), of one market or (ticker NULL) all, oldest first.
    """
    CREATE OR REPLACE MACRO trades_between(from_time, to_time, ticker := NULL) AS TABLE
    SELECT coalesce(exchange_ts, received_at) AS traded_at, market_ticker, trade_id, yes_price,
           no_price, count, taker_side, taker_outcome_side, taker_book_side, is_block_trade,
           source, received_at
    FROM trades
    WHERE coalesce(exchange_ts, received_at) BETWEEN from_time AND to_time
      AND (ticker IS NULL OR market_ticker = ticker)
    ORDER BY traded_at, trade_id
    """,
]


# The keyframes of one engine's books that changed in the window (start, end] (parameters:
# start, end as TIMESTAMPTZ, the engine's pid): for each run (market, sid) with deltas in the
# window, the book after its last delta by `end`, rebuilt from the run's newest snapshot or
# keyframe and the deltas after it; `snapshot_at` carried over. Run by the writer in the
# transaction of the batch that passed `end` (stream/keyframes.py); a keyframe already stored
# is not stored again.
KEYFRAME_SQL = f"""
INSERT INTO book_keyframes
WITH changed AS (
    SELECT market_ticker, sid, arg_max(landing_segment, pos) AS landing_segment,
           arg_max(landing_offset, pos) AS landing_offset, max(received_at) AS received_at,
           max(pos) AS pos
    FROM (SELECT *, {_pos("d")} AS pos FROM book_deltas_stored d
          WHERE d.received_at > $1 AND d.received_at <= $2 AND {_engine("d")} = $3)
    GROUP BY market_ticker, sid),
-- each changed book's base: the newest snapshot or keyframe before its last delta in the window
-- (a resync snapshot received after that delta starts a book of its own; it is not this one)
bases AS (
    SELECT b.*, c.pos AS until_pos FROM (
        SELECT s.market_ticker, s.sid, {_pos("s")} AS pos, s.received_at,
               s.received_at AS snapshot_at, s.yes_levels, s.no_levels
        FROM book_snapshots s WHERE s.received_at <= $2 AND {_engine("s")} = $3
        UNION ALL
        SELECT k.market_ticker, k.sid, {_pos("k")}, k.received_at, k.snapshot_at, k.yes_levels,
               k.no_levels
        FROM book_keyframes k WHERE k.received_at <= $2 AND {_engine("k")} = $3) b
    JOIN changed c ON c.market_ticker = b.market_ticker AND c.sid IS NOT DISTINCT FROM b.sid
    WHERE b.pos < c.pos
    QUALIFY row_number() OVER (PARTITION BY b.market_ticker, b.sid ORDER BY b.pos DESC) = 1),
levels AS (
    SELECT market_ticker, sid, 'yes' AS side, unnest(yes_levels, recursive := true) FROM bases
    UNION ALL
    SELECT market_ticker, sid, 'no' AS side, unnest(no_levels, recursive := true) FROM bases
    UNION ALL
    SELECT d.market_ticker, d.sid, d.side, d.price, d.delta
    FROM book_deltas_stored d JOIN bases b
      ON d.market_ticker = b.market_ticker AND d.sid IS NOT DISTINCT FROM b.sid
    WHERE d.received_at >= b.received_at AND d.received_at <= $2 AND {_engine("d")} = $3
      AND {_pos("d")} > b.pos AND {_pos("d")} <= b.until_pos),
book AS (
    SELECT market_ticker, sid, side, price, sum(size)::DECIMAL(18,2) AS size FROM levels
    WHERE price IS NOT NULL GROUP BY ALL HAVING sum(size) <> 0),
sides AS (
    SELECT market_ticker, sid,
           list({{'price': price, 'size': size}} ORDER BY price) FILTER (side = 'yes') AS yes,
           list({{'price': price, 'size': size}} ORDER BY price) FILTER (side = 'no') AS no
    FROM book GROUP BY ALL)
SELECT c.market_ticker, c.sid,
       coalesce(x.yes, []) AS yes_levels, coalesce(x.no, []) AS no_levels,
       b.snapshot_at, c.received_at, c.landing_segment, c.landing_offset
FROM changed c
JOIN bases b ON b.market_ticker = c.market_ticker AND b.sid IS NOT DISTINCT FROM c.sid
LEFT JOIN sides x ON x.market_ticker = c.market_ticker AND x.sid IS NOT DISTINCT FROM c.sid
WHERE NOT EXISTS (
    SELECT 1 FROM book_keyframes k
    WHERE k.landing_segment = c.landing_segment AND k.landing_offset = c.landing_offset
      AND k.market_ticker = c.market_ticker)
"""


class _Connection(Protocol):
    def execute(self, sql: str, params: Any = ...) -> Any: ...


@dataclass(frozen=True)
class Level:
    side: str  # 'yes' | 'no' (NO bids at NO-leg prices)
    price: Decimal
    size: Decimal


@dataclass(frozen=True)
class Book:
    """A market's book at a time: bids per side, best first, and whether it can be trusted."""

    market_ticker: str
    at: datetime
    yes: list[Level]
    no: list[Level]
    snapshot_at: datetime | None  # the snapshot it was rebuilt from; None: none recorded by then
    valid: bool
    reason: str | None  # why it is not valid

    @property
    def yes_bid(self) -> Decimal | None:
        return self.yes[0].price if self.yes else None

    @property
    def yes_ask(self) -> Decimal | None:
        """The best YES offer: 1 minus the best NO bid."""
        return 1 - self.no[0].price if self.no else None


def book_at(con: _Connection, ticker: str, at: datetime, depth: int = 0) -> Book:
    """The book of `ticker` as received by `at`, `depth` levels a side (0: all).

    The same rules as the `book_at` macro, in a few small statements with the times bound as
    constants: DuckDB plans each in a fraction of the macro's time and prunes the deltas' row
    groups by receive time (tests hold the two to the same answers)."""
    _check_time(at, "at")
    base = con.execute(_NEWEST_BASE.format(run=""), [ticker, at, ticker, at]).fetchone()
    if base is None:
        return Book(ticker, at, [], [], None, False, f"no order book of {ticker} recorded by {at}")
    engine, sid, pos, received_at = base[0], base[1], base[2], base[3]
    latest = con.execute(_LATEST_DELTA, [ticker, received_at, at]).fetchone()
    if (
        latest is not None
        and (latest[2], latest[3]) > (received_at, pos)
        and (latest[0], latest[1]) != (engine, sid)
    ):  # the latest frame came on another engine's connection (a handover)
        run = f" AND engine = {int(latest[0])} AND sid IS NOT DISTINCT FROM ?"
        base = con.execute(
            _NEWEST_BASE.format(run=run), [ticker, at, ticker, at, latest[1]]
        ).fetchone()
        if base is None:  # its snapshot was never stored (a frame that could not be read?)
            why = (
                f"the latest deltas of {ticker} by {at} came on a connection (engine "
                f"{latest[0]}, sid {latest[1]}) with no stored snapshot of it"
            )
            return Book(ticker, at, [], [], None, False, why)
        engine, sid, pos, received_at = base[0], base[1], base[2], base[3]
    snapshot_at = base[4]
    sizes: dict[tuple[str, Decimal], Decimal] = {}
    for side, levels in (("yes", base[5]), ("no", base[6])):
        for level in levels:
            key = (side, level["price"])
            sizes[key] = sizes.get(key, Decimal(0)) + level["size"]
    rows = con.execute(
        _RUN_DELTAS_AND_BREAK,
        [ticker, received_at, at, engine, sid, pos, ticker, sid, engine, snapshot_at, at],
    ).fetchall()
    broken: tuple[Any, ...] | None = None
    for kind, side, price, size, occurred_at, detail in rows:
        if kind == "delta":
            sizes[(side, price)] = sizes.get((side, price), Decimal(0)) + size
        elif broken is None or occurred_at < broken[0]:
            broken = (occurred_at, side, detail)
    yes, no = _sides(sizes, depth)
    if broken is None:
        return Book(ticker, at, yes, no, snapshot_at, True, None)
    occurred_at, kind, detail = broken
    reason = f"{kind} at {occurred_at:%Y-%m-%d %H:%M:%S.%f}: {detail}"
    return Book(ticker, at, yes, no, snapshot_at, False, reason)


def _sides(sizes: dict[tuple[str, Decimal], Decimal], depth: int) -> tuple[list[Level], ...]:
    out: tuple[list[Level], list[Level]] = ([], [])
    for i, side in enumerate(("yes", "no")):
        levels = sorted(
            ((p, n) for (s, p), n in sizes.items() if s == side and p is not None and n > 0),
            reverse=True,
        )
        out[i].extend(Level(side, p, n) for p, n in levels[: depth if depth > 0 else None])
    return out


# The newest snapshot or keyframe of a market by a time (of one run with `run`).
_NEWEST_BASE = f"""
SELECT engine, sid, pos, received_at, snapshot_at, yes_levels, no_levels FROM (
    SELECT {_engine("s")} AS engine, s.sid, {_pos("s")} AS pos, s.received_at,
           s.received_at AS snapshot_at, s.yes_levels, s.no_levels
    FROM book_snapshots s WHERE s.market_ticker = ? AND s.received_at <= ?
    UNION ALL
    SELECT {_engine("k")}, k.sid, {_pos("k")}, k.received_at, k.snapshot_at, k.yes_levels,
           k.no_levels
    FROM book_keyframes k WHERE k.market_ticker = ? AND k.received_at <= ?)
WHERE true{{run}}
ORDER BY received_at DESC, pos DESC LIMIT 1
"""
# The market's latest delta between two times: whose connection it came on.
_LATEST_DELTA = f"""
SELECT {_engine("d")} AS engine, d.sid, d.received_at, {_pos("d")} AS pos
FROM book_deltas_stored d
WHERE d.market_ticker = ? AND d.received_at >= ? AND d.received_at <= ?
ORDER BY d.received_at DESC, pos DESC LIMIT 1
"""
# The run's deltas after its base, summed by level, and the feed events that break its book.
_RUN_DELTAS_AND_BREAK = f"""
SELECT 'delta' AS kind, d.side, d.price, sum(d.delta) AS size, NULL::TIMESTAMPTZ AS at,
       NULL::VARCHAR AS detail
FROM book_deltas_stored d
WHERE d.market_ticker = ? AND d.received_at >= ?::TIMESTAMPTZ
  AND d.received_at <= ?::TIMESTAMPTZ AND {_engine("d")} = ? AND d.sid IS NOT DISTINCT FROM ?
  AND {_pos("d")} > ?
GROUP BY ALL
UNION ALL
SELECT 'break', e.kind, NULL, NULL, e.occurred_at, e.detail
FROM feed_events e, (SELECT ?::VARCHAR AS ticker, ?::INTEGER AS sid, ?::INTEGER AS engine) b
WHERE e.source = 'websocket' AND e.occurred_at >= ?::TIMESTAMPTZ
  AND e.occurred_at <= ?::TIMESTAMPTZ AND {_BREAKS}
"""


@dataclass(frozen=True)
class TopOfBook:
    received_at: datetime
    exchange_ts: datetime | None
    yes_bid: Decimal
    yes_bid_size: Decimal
    yes_ask: Decimal
    yes_ask_size: Decimal


def top_of_book(con: _Connection, ticker: str, start: datetime, end: datetime) -> list[TopOfBook]:
    """Every change of `ticker`'s best YES bid and ask (and sizes) from its books, start to end."""
    _check_range(start, end)
    rows = con.execute("FROM top_of_book(?, ?, ?)", [ticker, start, end]).fetchall()
    return [TopOfBook(*r) for r in rows]


def top_of_book_differences(
    con: _Connection, ticker: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Ticks of the ticker channel whose L1 differs from the books' top of book at the same
    exchange time (an empty list: the two channels agree)."""
    _check_range(start, end)
    cur = con.execute("FROM top_of_book_check(?, ?, ?)", [ticker, start, end])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def trades_between(
    con: _Connection, start: datetime, end: datetime, ticker: str | None = None
) -> list[dict[str, Any]]:
    """Trades executed from `start` to `end` (inclusive), of one market or all, oldest first."""
    _check_range(start, end)
    cur = con.execute("FROM trades_between(?, ?, ticker := ?)", [start, end, ticker])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


class BookQueryError(ValueError):
    """A book query asked with times it cannot answer (naive times, an empty range)."""


def _check_time(value: datetime, name: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise BookQueryError(
            f"{name} must be a timezone-aware datetime (the warehouse keeps UTC times), got "
            f"{value!r}; use datetime(..., tzinfo=timezone.utc)"
        )


def _check_range(start: datetime, end: datetime) -> None:
    _check_time(start, "start")
    _check_time(end, "end")
    if end < start:
        raise BookQueryError(f"the range ends ({end}) before it starts ({start}); swap them")

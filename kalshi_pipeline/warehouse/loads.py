"""Loads: what the writer stores, and the one transaction that stores a batch.

The stream's writer decodes landing records into a `Batch` (columns of ticks, markets, events,
feed events, poll passes, wire traffic) and hands it here with the landing positions it reached;
`commit` inserts all of it and the new positions in one transaction, so a batch is stored
exactly once or not at all. `TICK_SCHEMA` is the one definition of the columns the writer fills
in `ticks` (plus `stored_at`, set at commit).

Ticks received while another engine was receiving too (a handover's overlap, listed in
`Batch.overlap`) are stored only when no equal tick is: a WebSocket tick equal in every value and
in Kalshi's `ts_ms` to one stored (or earlier in the batch) is the same frame received twice; an
HTTP tick is an observation of a market's state, kept only when it differs from the state stored
just before it (the poller's own rule, applied to both engines' observations in time order).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from kalshi_pipeline.warehouse.books import KEYFRAME_SQL

PRICE = pa.decimal128(10, 4)
COUNT = pa.decimal128(18, 2)
TICK_SCHEMA = pa.schema(
    [
        ("market_ticker", pa.string()),
        ("source", pa.string()),
        ("exchange_ts", pa.timestamp("ms", tz="UTC")),
        ("received_at", pa.timestamp("ns", tz="UTC")),
        ("sent_at", pa.timestamp("ms", tz="UTC")),  # Kalshi's sending_ts_ms; NULL for REST
        ("price", PRICE),
        ("yes_bid", PRICE),
        ("yes_ask", PRICE),
        ("yes_bid_size", COUNT),
        ("yes_ask_size", COUNT),
        ("last_trade_size", COUNT),
        ("volume", COUNT),
        ("open_interest", COUNT),
        ("landing_segment", pa.int64()),
        ("landing_offset", pa.int32()),
    ]
)
LEVELS = pa.list_(pa.struct([("price", PRICE), ("size", COUNT)]))
SNAPSHOT_SCHEMA = pa.schema(
    [
        ("market_ticker", pa.string()),
        ("sid", pa.int32()),
        ("seq", pa.int64()),
        ("yes_levels", LEVELS),
        ("no_levels", LEVELS),
        ("received_at", pa.timestamp("ns", tz="UTC")),
        ("sent_at", pa.timestamp("ms", tz="UTC")),
        ("landing_segment", pa.int64()),
        ("landing_offset", pa.int32()),
    ]
)
DELTA_SCHEMA = pa.schema(
    [
        ("market_ticker", pa.string()),
        ("sid", pa.int32()),
        ("seq", pa.int64()),
        ("side", pa.string()),
        ("price", PRICE),
        ("delta", COUNT),
        ("received_at", pa.timestamp("ns", tz="UTC")),
        ("exchange_lag_ms", pa.int64()),
        ("sent_lag_ms", pa.int64()),
        ("landing_segment", pa.int64()),
        ("landing_offset", pa.int32()),
    ]
)
TRADE_SCHEMA = pa.schema(
    [
        ("trade_id", pa.string()),
        ("market_ticker", pa.string()),
        ("source", pa.string()),
        ("yes_price", PRICE),
        ("no_price", PRICE),
        ("count", COUNT),
        ("taker_side", pa.string()),
        ("taker_outcome_side", pa.string()),
        ("taker_book_side", pa.string()),
        ("is_block_trade", pa.bool_()),
        ("exchange_ts", pa.timestamp("ms", tz="UTC")),
        ("received_at", pa.timestamp("ns", tz="UTC")),
        ("sent_at", pa.timestamp("ms", tz="UTC")),
        ("sid", pa.int32()),
        ("seq", pa.int64()),
        ("landing_segment", pa.int64()),
        ("landing_offset", pa.int32()),
    ]
)
MARKET_SCHEMA = pa.schema(
    [
        ("market_ticker", pa.string()),
        ("event_ticker", pa.string()),
        ("series_ticker", pa.string()),
        ("title", pa.string()),
        ("yes_sub_title", pa.string()),
        ("status", pa.string()),
        ("open_time", pa.timestamp("us", tz="UTC")),
        ("close_time", pa.timestamp("us", tz="UTC")),
        ("result", pa.string()),
        ("settlement_bounds_type", pa.string()),
        ("settlement_floor_dollars", PRICE),
        ("settlement_value_dollars", PRICE),
        ("exchange_index", pa.int32()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("updated_by", pa.string()),
    ]
)
MARKET_FIELDS = (
    "market_ticker",
    "event_ticker",
    "series_ticker",
    "title",
    "yes_sub_title",
    "status",
    "open_time",
    "close_time",
    "result",
    "settlement_bounds_type",
    "settlement_floor_dollars",
    "settlement_value_dollars",
    "exchange_index",
    "updated_by",
)


# `ticks` as stored: the writer's columns plus the commit's `stored_at` (reports select these)
TICK_COLUMNS: tuple[str, ...] = (*TICK_SCHEMA.names, "stored_at")


# Plain WebSocket ticks and deltas decoded in bulk (`kalshi/bulk.py`): decimals as the strings
# received, cast here by DuckDB (exact: the bulk decoder passes only strings the cast keeps as
# they are); the other columns as in TICK_SCHEMA and DELTA_SCHEMA.
def _cast(name: str, decimal: pa.Decimal128Type) -> str:
    """A decimal string column of a wire table as the column it fills ('' is NULL)."""
    return f"CAST(NULLIF({name}, '') AS DECIMAL({decimal.precision},{decimal.scale})) AS {name}"


_TICK_DECIMALS = [f for f in TICK_SCHEMA if isinstance(f.type, pa.Decimal128Type)]
WIRE_TICK_SCHEMA = pa.schema(
    [
        *(f for f in TICK_SCHEMA if f.name != "source" and f not in _TICK_DECIMALS),
        *((f.name, pa.string()) for f in _TICK_DECIMALS),
    ]
)
WIRE_DELTA_SCHEMA = pa.schema(
    [
        ("market_ticker", pa.string()),
        ("sid", pa.int32()),
        ("seq", pa.int64()),
        ("side", pa.string()),
        ("price", pa.string()),
        ("delta", pa.string()),
        ("received_at", pa.timestamp("ns", tz="UTC")),
        ("ts_ms", pa.int64()),
        ("sent_ms", pa.int64()),
        ("landing_segment", pa.int64()),
        ("landing_offset", pa.int32()),
    ]
)
_WIRE_TICKS_SQL = (
    "INSERT INTO ticks_stored BY NAME SELECT * EXCLUDE ("
    + ", ".join(f.name for f in _TICK_DECIMALS)
    + "), 'websocket' AS source, "
    + ", ".join(_cast(f.name, f.type) for f in _TICK_DECIMALS)
    + ", now() AS stored_at FROM _kp_wire_ticks"
)
_WIRE_DELTAS_SQL = (
    "INSERT INTO book_deltas_stored BY NAME SELECT market_ticker, sid, seq, side, "
    f"{_cast('price', PRICE)}, {_cast('delta', COUNT)}, received_at, "
    # the receive time's whole ms (DuckDB truncates the ns to us, and so the ms are exact)
    "epoch_ms(received_at) - ts_ms AS exchange_lag_ms, "
    "epoch_ms(received_at) - sent_ms AS sent_lag_ms, "
    "landing_segment, landing_offset FROM _kp_wire_deltas"
)


@dataclass
class Batch:
    """Rows for one transaction, and how far into each landing segment they reach."""

    cols: dict[str, list[Any]] = field(default_factory=lambda: {f.name: [] for f in TICK_SCHEMA})
    markets: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (at ns, source, kind, detail, engine pid or None)
    feed_events: list[tuple[int, str, str, str, int | None]] = field(default_factory=list)
    passes: list[dict[str, Any]] = field(default_factory=list)
    traffic: dict[str, list[int]] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    snapshots: dict[str, list[Any]] = field(
        default_factory=lambda: {f.name: [] for f in SNAPSHOT_SCHEMA}
    )
    deltas: dict[str, list[Any]] = field(default_factory=lambda: {f.name: [] for f in DELTA_SCHEMA})
    # (engine pid, start ns, end ns]: store the books that changed in these windows as keyframes
    keyframe_windows: list[tuple[int, int, int]] = field(default_factory=list)
    trades: dict[str, list[Any]] = field(default_factory=lambda: {f.name: [] for f in TRADE_SCHEMA})
    wire_ticks: dict[str, list[Any]] = field(
        default_factory=lambda: {f.name: [] for f in WIRE_TICK_SCHEMA}
    )
    wire_deltas: dict[str, list[Any]] = field(
        default_factory=lambda: {f.name: [] for f in WIRE_DELTA_SCHEMA}
    )
    overlap: list[int] = field(default_factory=list)  # tick rows received by two engines at once
    dropped: dict[str, int] = field(default_factory=dict)  # by source: already stored (commit)

    @property
    def rows(self) -> int:
        """Ticks, both ways decoded."""
        return len(self.cols["market_ticker"]) + len(self.wire_ticks["market_ticker"])

    @property
    def ws_ticks(self) -> int:
        """WebSocket ticks, both ways decoded (before any overlap was dropped)."""
        return len(self.wire_ticks["market_ticker"]) + sum(
            1 for s in self.cols["source"] if s == "websocket"
        )

    @property
    def book_deltas(self) -> int:
        return len(self.deltas["market_ticker"]) + len(self.wire_deltas["market_ticker"])

    @property
    def size(self) -> int:
        """Rows of every per-frame table (ticks, book snapshots and deltas, trades)."""
        return (
            self.rows
            + len(self.snapshots["market_ticker"])
            + self.book_deltas
            + len(self.trades["trade_id"])
        )


def commit(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """Store `batch` and its landing positions in one transaction.

    Few statements, none of them empty: on a busy machine every DuckDB statement costs a
    millisecond or more of CPU however small it is (measured: an idle `SELECT 1` after 100 ms
    of sleep, 1.2 ms), so their count per commit is most of the writer's CPU.
    """
    try:
        con.execute("BEGIN TRANSACTION")
    except duckdb.TransactionException:
        # the last commit failed for want of memory and so did its ROLLBACK (clients' queries
        # had the memory): the transaction is still open, aborted; end it, then begin
        con.execute("ROLLBACK")
        con.execute("BEGIN TRANSACTION")
    try:
        if batch.wire_ticks["market_ticker"]:
            _kp_wire_ticks = pa.Table.from_pydict(batch.wire_ticks, schema=WIRE_TICK_SCHEMA)
            con.execute(_WIRE_TICKS_SQL)
        if batch.wire_deltas["market_ticker"]:
            _kp_wire_deltas = pa.Table.from_pydict(batch.wire_deltas, schema=WIRE_DELTA_SCHEMA)
            con.execute(_WIRE_DELTAS_SQL)
        if batch.cols["market_ticker"]:
            # read by DuckDB's replacement scan (the local name): registering and unregistering
            # a view would be two more statements in every commit
            _kp_ticks = pa.Table.from_pydict(batch.cols, schema=TICK_SCHEMA)
            if batch.overlap:
                _kp_ticks = _without_duplicates(con, _kp_ticks, batch)
            con.execute(
                "INSERT INTO ticks_stored BY NAME SELECT *, now() AS stored_at FROM _kp_ticks"
            )
        # replacement scans of local names, as for the ticks (no register/unregister statements)
        if batch.snapshots["market_ticker"]:
            _kp_snapshots = pa.Table.from_pydict(batch.snapshots, schema=SNAPSHOT_SCHEMA)
            con.execute("INSERT INTO book_snapshots BY NAME SELECT * FROM _kp_snapshots")
        if batch.deltas["market_ticker"]:
            _kp_deltas = pa.Table.from_pydict(batch.deltas, schema=DELTA_SCHEMA)
            con.execute("INSERT INTO book_deltas_stored BY NAME SELECT * FROM _kp_deltas")
        for engine, start_ns, end_ns in batch.keyframe_windows:
            con.execute(KEYFRAME_SQL, [_ts(start_ns), _ts(end_ns), engine])
        if batch.trades["trade_id"]:
            # a trade Kalshi sent twice (a resubscription, a REST backfill of a gap) is stored once
            _kp_trades = pa.Table.from_pydict(batch.trades, schema=TRADE_SCHEMA)
            con.execute(
                "INSERT INTO trades BY NAME SELECT * FROM _kp_trades t "
                "WHERE NOT EXISTS (SELECT 1 FROM trades s WHERE s.trade_id = t.trade_id) "
                "QUALIFY row_number() OVER (PARTITION BY trade_id ORDER BY received_at) = 1"
            )
        if batch.markets:
            _upsert_markets(con, batch)
        if batch.events:
            con.executemany(
                "INSERT INTO events (event_ticker, series_ticker, title, exchange_index, "
                "updated_at) VALUES (?, ?, ?, ?, now()) ON CONFLICT (event_ticker) "
                "DO UPDATE SET "
                "series_ticker = coalesce(excluded.series_ticker, events.series_ticker), "
                "title = coalesce(excluded.title, events.title), "
                "exchange_index = coalesce(excluded.exchange_index, events.exchange_index), "
                "updated_at = now()",
                [
                    [e["event_ticker"], e["series_ticker"], e["title"], e["exchange_index"]]
                    for e in batch.events.values()
                ],
            )
        if batch.feed_events:  # a burst of parse errors is hundreds of rows: one statement
            at_ns, source, kind, detail, engine = zip(*batch.feed_events, strict=True)
            _kp_events = pa.table(
                {
                    "at_ns": pa.array(at_ns, pa.int64()),
                    "source": source,
                    "kind": kind,
                    "detail": detail,
                    "engine": pa.array(engine, pa.int32()),
                }
            )
            con.execute(
                "INSERT INTO feed_events BY NAME SELECT make_timestamp_ns(at_ns)::TIMESTAMPTZ "
                "AS occurred_at, source, kind, detail, engine FROM _kp_events"
            )
        if batch.passes:
            con.executemany(
                "INSERT INTO poll_passes VALUES (make_timestamp_ns(?)::TIMESTAMPTZ, "
                "make_timestamp_ns(?)::TIMESTAMPTZ, ?, ?, ?, ?, ?, ?, ?)",
                [
                    [
                        p["started_at"],
                        p["finished_at"],
                        p["purpose"],
                        p["pages"],
                        p["requests"],
                        p["retries"],
                        p["response_bytes"],
                        p["markets_seen"],
                        p["markets_changed"],
                    ]
                    for p in batch.passes
                ],
            )
        for src, (frames, size) in batch.traffic.items():
            con.execute("INSERT INTO wire_traffic VALUES (now(), ?, ?, ?)", [src, frames, size])
        for seg, pos in batch.positions.items():
            # an UPDATE costs a third of an INSERT ... ON CONFLICT; a segment's first batch inserts
            if not con.execute(
                "UPDATE landing_positions SET position = ?, updated_at = now() "
                "WHERE segment = ? RETURNING segment",
                [pos, seg],
            ).fetchall():
                con.execute("INSERT INTO landing_positions VALUES (?, ?, now())", [seg, pos])
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            con.execute("ROLLBACK")
        raise


# What makes two WebSocket ticks the same frame (not when or through which connection it came).
_SAME_FRAME = (
    "market_ticker",
    "exchange_ts",
    "price",
    "yes_bid",
    "yes_ask",
    "yes_bid_size",
    "yes_ask_size",
    "last_trade_size",
    "volume",
    "open_interest",
)
# What makes an HTTP observation a change (the poller's own comparison).
_STATE = ("price", "yes_bid", "yes_ask", "yes_bid_size", "yes_ask_size", "volume", "open_interest")
_SEARCH = "INTERVAL 60 SECOND"  # how far around the overlap to look for the other engine's copy


def _without_duplicates(con: duckdb.DuckDBPyConnection, table: pa.Table, batch: Batch) -> pa.Table:
    """`table` less the overlap rows that are stored already (see the module's docstring)."""
    flags = [False] * table.num_rows
    for i in batch.overlap:
        flags[i] = True
    mask = pa.array(flags)
    window = table.filter(mask).append_column("_i", pa.array(range(len(batch.overlap)), pa.int64()))
    rest = table.filter(pc.invert(mask))
    con.register("_kp_window", window)
    try:
        same = " AND ".join(f"s.{c} IS NOT DISTINCT FROM w.{c}" for c in _SAME_FRAME)
        keep_ws = con.execute(
            f"""
            SELECT _i FROM (
                SELECT *, row_number() OVER (PARTITION BY {", ".join(_SAME_FRAME)}
                                             ORDER BY received_at, _i) AS _n
                FROM _kp_window WHERE source = 'websocket') w
            WHERE _n = 1 AND NOT EXISTS (
                SELECT 1 FROM ticks s
                WHERE s.source = 'websocket'
                  AND s.received_at BETWEEN (SELECT min(received_at) FROM _kp_window) - {_SEARCH}
                                        AND (SELECT max(received_at) FROM _kp_window) + {_SEARCH}
                  AND {same})
            """
        ).fetchall()
        cols = ", ".join(_STATE)
        changed = " OR ".join(f"lag({c}) OVER w IS DISTINCT FROM {c}" for c in _STATE)
        keep_http = con.execute(
            f"""
            WITH new AS (SELECT * FROM _kp_window WHERE source = 'http'),
            bounds AS (SELECT min(received_at) - {_SEARCH} AS lo,
                              max(received_at) + {_SEARCH} AS hi FROM new),
            stored AS (
                SELECT market_ticker, received_at, {cols} FROM ticks, bounds
                WHERE source = 'http' AND received_at BETWEEN lo AND hi
                  AND market_ticker IN (SELECT market_ticker FROM new)
                UNION ALL
                SELECT market_ticker, received_at, {cols} FROM ticks, bounds
                WHERE source = 'http' AND received_at < lo AND received_at >= lo - INTERVAL 1 DAY
                  AND market_ticker IN (SELECT market_ticker FROM new)
                QUALIFY row_number() OVER (PARTITION BY market_ticker
                                           ORDER BY received_at DESC) = 1),
            seen AS (
                SELECT market_ticker, received_at, {cols}, NULL::BIGINT AS _i FROM stored
                UNION ALL SELECT market_ticker, received_at, {cols}, _i FROM new)
            SELECT _i FROM (
                SELECT _i, row_number() OVER w = 1 OR {changed} AS _changed FROM seen
                WINDOW w AS (PARTITION BY market_ticker ORDER BY received_at, _i NULLS FIRST))
            WHERE _i IS NOT NULL AND _changed
            """
        ).fetchall()
    finally:
        con.unregister("_kp_window")
    keep = sorted(i for (i,) in keep_ws + keep_http)
    kept = window.take(pa.array(keep, pa.int64())).drop_columns(["_i"])
    sources = window.column("source").to_pylist()
    kept_set = set(keep)
    for i, source in enumerate(sources):
        if i not in kept_set:
            batch.dropped[source] = batch.dropped.get(source, 0) + 1
    return pa.concat_tables([rest, kept]) if kept.num_rows else rest


def _upsert_markets(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """One INSERT ... ON CONFLICT from an Arrow table: row-by-row takes seconds per 1,000."""
    now = _ts(time.time_ns())
    rows = list(batch.markets.values())
    columns: dict[str, list[Any]] = {
        name: [m.get(name) for m in rows] for name in MARKET_FIELDS[:-1]
    }
    for name in ("open_time", "close_time"):
        columns[name] = [_ts(v) for v in columns[name]]
    columns["updated_at"] = [_ts(m.get("updated_at")) or now for m in rows]
    columns["updated_by"] = [m.get("updated_by", "http") for m in rows]
    table = pa.Table.from_pydict(columns, schema=MARKET_SCHEMA)
    sets = ", ".join(f"{c} = coalesce(excluded.{c}, markets.{c})" for c in MARKET_FIELDS[1:-1])
    con.register("_kp_markets", table)
    try:
        con.execute(
            f"INSERT INTO markets BY NAME SELECT * FROM _kp_markets "
            f"ON CONFLICT (market_ticker) DO UPDATE SET {sets}, "
            "updated_at = excluded.updated_at, updated_by = excluded.updated_by"
        )
    finally:
        con.unregister("_kp_markets")


def _ts(value: Any) -> Any:
    """Nanoseconds since the epoch (or a datetime) as a datetime DuckDB binds as TIMESTAMPTZ."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(value / 1e9, tz=UTC)


def stored_trade_ids(con: duckdb.DuckDBPyConnection, trade_ids: list[str]) -> set[str]:
    """Of `trade_ids`, those `trades` holds already: what a backfill page cannot add."""
    if not trade_ids:
        return set()
    rows = con.execute(
        "SELECT DISTINCT trade_id FROM trades WHERE trade_id IN (SELECT unnest(?::VARCHAR[]))",
        [trade_ids],
    ).fetchall()
    return {r[0] for r in rows}

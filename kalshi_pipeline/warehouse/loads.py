"""Loads: what the writer stores, and the one transaction that stores a batch.

The stream's writer decodes landing records into a `Batch` (columns of ticks, markets, events,
feed events, poll passes, wire traffic) and hands it here with the landing positions it reached;
`commit` inserts all of it and the new positions in one transaction, so a batch is stored
exactly once or not at all. `TICK_SCHEMA` is the one definition of the columns the writer fills
in `ticks` (plus `stored_at`, set at commit).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

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


@dataclass
class Batch:
    """Rows for one transaction, and how far into each landing segment they reach."""

    cols: dict[str, list[Any]] = field(default_factory=lambda: {f.name: [] for f in TICK_SCHEMA})
    markets: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    feed_events: list[tuple[int, str, str, str]] = field(default_factory=list)
    passes: list[dict[str, Any]] = field(default_factory=list)
    traffic: dict[str, list[int]] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.cols["market_ticker"])


def commit(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """Store `batch` and its landing positions in one transaction.

    Few statements, none of them empty: on a busy machine every DuckDB statement costs a
    millisecond or more of CPU however small it is (measured: an idle `SELECT 1` after 100 ms
    of sleep, 1.2 ms), so their count per commit is most of the writer's CPU.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        if batch.rows:
            # read by DuckDB's replacement scan (the local name): registering and unregistering
            # a view would be two more statements in every commit
            _kp_ticks = pa.Table.from_pydict(batch.cols, schema=TICK_SCHEMA)
            con.execute("INSERT INTO ticks BY NAME SELECT *, now() AS stored_at FROM _kp_ticks")
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
            at_ns, source, kind, detail = zip(*batch.feed_events, strict=True)
            _kp_events = pa.table(
                {
                    "at_ns": pa.array(at_ns, pa.int64()),
                    "source": source,
                    "kind": kind,
                    "detail": detail,
                }
            )
            con.execute(
                "INSERT INTO feed_events SELECT make_timestamp_ns(at_ns)::TIMESTAMPTZ, source, "
                "kind, detail FROM _kp_events"
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

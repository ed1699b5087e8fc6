"""SQL for `kalshi-pipeline status`, and for feed events recorded from Dagster.

Each function takes a client from `Warehouse.connect()` (attached to the stream's writer while it
serves, else on the file itself), so the caller decides how long it may wait for the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from kalshi_pipeline.warehouse.connection import Warehouse

MAX_DETAIL_CHARS = 2000


@dataclass(frozen=True)
class FeedEvent:
    occurred_at_ms: int
    source: str
    kind: str
    detail: str


@dataclass(frozen=True)
class TickActivity:
    newest_stored_at_ms: int | None  # None: no tick stored yet
    newest_received_at_ms: int | None
    last_window_by_source: dict[str, int] = field(default_factory=dict)
    window_s: float = 60.0


def record_feed_event(
    warehouse: Warehouse, source: str, kind: str, detail: str, *, timeout_s: float = 5.0
) -> None:
    """Append one `feed_events` row (creating the schema if the stream never ran).

    Raises WarehouseError (WarehouseBusyError past `timeout_s`) for the caller to log.
    """
    with warehouse.connect(create=True, timeout_s=timeout_s) as con:
        con.execute(
            "INSERT INTO feed_events (occurred_at, source, kind, detail) VALUES (now(), ?, ?, ?)",
            [source, kind, detail[:MAX_DETAIL_CHARS]],
        )


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()
    return bool(row and row[0])


def tick_activity(con: duckdb.DuckDBPyConnection, window_s: float = 60.0) -> TickActivity:
    """The newest tick, and the ticks stored in the last `window_s` seconds per source."""
    if not _has_table(con, "ticks"):
        return TickActivity(None, None, {}, window_s)
    rows = con.execute(
        "SELECT source, count(*) FROM ticks "
        "WHERE stored_at >= now() - to_microseconds(CAST(? * 1e6 AS BIGINT)) "
        "GROUP BY source ORDER BY source",
        [window_s],
    ).fetchall()
    # The recent window first: zone maps let DuckDB skip old row groups; only an idle stream
    # needs the full scan.
    newest = con.execute(
        "SELECT epoch_ms(max(stored_at)), epoch_ms(max(received_at)) FROM ticks "
        "WHERE stored_at >= now() - INTERVAL 1 HOUR"
    ).fetchone()
    if not newest or newest[0] is None:
        newest = con.execute(
            "SELECT epoch_ms(max(stored_at)), epoch_ms(max(received_at)) FROM ticks"
        ).fetchone()
    stored, received = (newest or (None, None))[:2]
    return TickActivity(
        None if stored is None else int(stored),
        None if received is None else int(received),
        {str(source): int(n) for source, n in rows},
        window_s,
    )


def recent_feed_events(con: duckdb.DuckDBPyConnection, limit: int = 10) -> list[FeedEvent]:
    """The newest `limit` feed events, newest first."""
    if not _has_table(con, "feed_events"):
        return []
    rows = con.execute(
        "SELECT epoch_ms(occurred_at), source, kind, detail FROM feed_events "
        "ORDER BY occurred_at DESC LIMIT ?",
        [limit],
    ).fetchall()
    return [FeedEvent(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def landing_positions(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Bytes of each landing segment already loaded, by segment name."""
    if not _has_table(con, "landing_positions"):
        return {}
    rows = con.execute("SELECT segment, position FROM landing_positions").fetchall()
    return {str(segment): int(position) for segment, position in rows}

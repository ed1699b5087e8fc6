"""What `kalshi-pipeline replay` asks of the database it fills: is it empty, and how far into
each landing segment it has loaded (the same `landing_positions` the stream's writer keeps)."""

from __future__ import annotations

import duckdb

# The tables a replay fills; a database with rows in any of them is not fresh.
DATA_TABLES = ("ticks", "markets", "events", "feed_events", "poll_passes", "landing_positions")


def rows_held(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows in each of DATA_TABLES that has any."""
    out: dict[str, int] = {}
    for table in DATA_TABLES:
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        if row and row[0]:
            out[table] = int(row[0])
    return out


def landing_positions(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Bytes of each landing segment already loaded."""
    return dict(con.execute("SELECT segment, position FROM landing_positions").fetchall())

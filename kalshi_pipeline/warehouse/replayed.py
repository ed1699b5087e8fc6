"""The database `kalshi-pipeline replay` fills: held for the replay, is it empty, and how far
into each landing segment it has loaded (the same `landing_positions` the stream's writer keeps).

A replay holds the file as the stream's owner does (under `<db>.lock`, so clients wait, and
with the migrations applied) but does not serve it: it runs for minutes, and DuckDB 1.5.5 can
hang when a Quack server is stopped soon after it started.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import duckdb
from filelock import Timeout

from kalshi_pipeline.warehouse.client import sql_literal
from kalshi_pipeline.warehouse.connection import (
    LOCK_POLL_S,
    WarehouseBusyError,
    file_lock,
    open_file,
)
from kalshi_pipeline.warehouse.schema import migrate

# The tables a replay fills; a database with rows in any of them is not fresh.
DATA_TABLES = ("ticks", "markets", "events", "feed_events", "poll_passes", "landing_positions")


@contextlib.contextmanager
def held(path: Path, *, timeout_s: float = 2.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """The file opened read-write under its lock, migrated; WarehouseBusyError while another
    process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = file_lock(path)
    try:
        lock.acquire(timeout=timeout_s, poll_interval=LOCK_POLL_S)
    except Timeout:
        raise WarehouseBusyError(
            f"the database {path} is held by another kalshi_pipeline process"
        ) from None
    try:
        con = open_file(path, config={"threads": "2"})
        try:
            migrate(con)
            yield con
            with contextlib.suppress(duckdb.Error):
                con.execute("CHECKPOINT")
        finally:
            con.close()
    finally:
        lock.release()


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


def differences(database: Path, other: Path, columns: dict[str, str]) -> dict[str, int]:
    """Rows in one database and not the other (both ways, duplicates counted), per table, over
    the given columns of each: what a replay must reproduce. Both files must be free."""
    out: dict[str, int] = {}
    con = duckdb.connect(str(database), read_only=True)
    try:
        con.execute(f"ATTACH {sql_literal(str(other))} AS other (READ_ONLY)")
        for table, cols in columns.items():
            mine = f"SELECT {cols} FROM main.{table}"  # our own table and column names
            theirs = f"SELECT {cols} FROM other.{table}"
            (n,) = con.execute(
                f"SELECT (SELECT count(*) FROM ({mine} EXCEPT ALL {theirs})) "
                f"+ (SELECT count(*) FROM ({theirs} EXCEPT ALL {mine}))"
            ).fetchone()
            out[table] = int(n)
    finally:
        con.close()
    return out

"""The owner: the one process that holds the DuckDB file, for its whole life.

The stream's writer opens the file once (under `<db>.lock`, held until it closes), applies the
migrations, caps DuckDB's memory and threads (clients' queries run inside this process, so an
analyst must not starve the appends), and serves everyone else over Quack (`server.py`). Closing
removes the endpoint file, stops the server and closes the file; a killed owner leaves a stale
endpoint that clients see through (its pid is gone) and the next owner replaces.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Protocol

import duckdb
from filelock import Timeout

from kalshi_pipeline.warehouse import server
from kalshi_pipeline.warehouse.connection import (
    LOCK_POLL_S,
    WarehouseBusyError,
    WarehouseError,
    file_lock,
    open_file,
)
from kalshi_pipeline.warehouse.extensions import load_extensions
from kalshi_pipeline.warehouse.schema import migrate, refresh_macros

log = logging.getLogger(__name__)

# Clients' queries share these with the stream's appends: a query that needs more memory fails
# with DuckDB's out-of-memory error instead of taking the machine (and the writer) with it. One
# thread: each client's query still runs on its own connection's thread, but none fans out over
# every core, and the writer's small commits wake no worker thread (measured on 2 cores: a
# 50-tick commit took 8.7 ms of CPU with threads=1 against 12.2 ms with 2).
MEMORY_LIMIT = "1GB"
THREADS = 1
# DuckDB keeps the blocks it has written in its buffer pool until memory runs short against
# `memory_limit`, so a stream that writes fast grows by what it wrote (at the 50,000 ticks/s
# firehose, 20 MB in 20 s; at 200 ticks/s about 15 MB an hour, toward the 1 GB limit).
# Lowering the limit for a moment is what makes DuckDB 1.5 evict them (down to the new limit,
# so to next to nothing: what is pinned stays, and the lowering then fails, having evicted the
# rest): `release_memory` does that, and only while no client is attached, since any query that
# allocates meanwhile fails against the lowered limit.
RELEASE_TO = "1MB"
# How long closing the file may take before the owner stops waiting for it. DuckDB 1.5.5's Quack
# server can hang in its destructor, joining a server thread that never ends (seen once under a
# loaded test suite, right after a start); everything is checkpointed before, so what is left is
# only the process's own handle, and a stream that is stopping must not wait forever on it.
CLOSE_TIMEOUT_S = 15.0


class Owner:
    """Holds the warehouse file and serves it. One thread at a time uses `connection()`."""

    def __init__(
        self,
        path: Path,
        *,
        port: int | None = None,
        memory_limit: str = MEMORY_LIMIT,
        threads: int = THREADS,
    ) -> None:
        self.path = Path(path)
        self.port = port
        self.memory_limit = memory_limit
        self.threads = threads
        self.endpoint: server.Endpoint | None = None
        self._lock = file_lock(self.path)
        self._con: duckdb.DuckDBPyConnection | None = None
        # DuckDB's WAL as last seen by `release_after_checkpoint`: when it shrinks, DuckDB has
        # checkpointed (every 16 MB of WAL), and what it wrote stays cached until released
        self._wal_bytes = 0
        self._release_due = False

    def __repr__(self) -> str:
        return f"Owner({str(self.path)!r}, serving={self.endpoint is not None})"

    @property
    def is_open(self) -> bool:
        return self._con is not None

    def connection(self, timeout_s: float = 0.5) -> duckdb.DuckDBPyConnection:
        """The held connection, opening and serving the file on first use.

        Raises WarehouseBusyError while another process has the file (a client that found no
        owner, the previous owner during a handover): the caller retries later. Other
        WarehouseErrors (port taken, a DuckDB 2.x file, missing extension) are for the user.
        """
        if self._con is not None:
            return self._con
        port = self.port if self.port is not None else server.configured_port()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        server.announce_start(self.path)  # clients without an owner make way (until we serve)
        try:
            self._lock.acquire(timeout=max(0.0, timeout_s), poll_interval=LOCK_POLL_S)
        except Timeout:
            raise WarehouseBusyError(
                f"the database {self.path} is held by another kalshi_pipeline process "
                f"(lock file {self._lock.lock_file})"
            ) from None
        con = None
        try:
            con = open_file(
                self.path,
                config={"memory_limit": self.memory_limit, "threads": str(self.threads)},
            )
            migrate(con)
            refresh_macros(con)
            load_extensions(con)
            self.endpoint = server.serve(con, self.path, port)
        except WarehouseBusyError:  # a program that opened the file directly: we try again
            if con is not None:
                with contextlib.suppress(duckdb.Error):
                    con.close()
            self._lock.release()
            raise
        except BaseException:
            if con is not None:
                with contextlib.suppress(duckdb.Error):
                    con.close()
            self._lock.release()
            server.withdraw_start(self.path)
            raise
        server.withdraw_start(self.path)
        self._con = con
        log.info("warehouse %s owned by this process, serving on 127.0.0.1:%d", self.path, port)
        return con

    def release_memory(self) -> bool:
        """Evict the table blocks DuckDB keeps cached (see RELEASE_TO), unless a client is
        attached or the file is not open; the memory limit is the configured one afterwards.
        Returns whether it evicted. Call it from the thread that uses `connection()`."""
        con = self._con
        if con is None:
            return False
        row = con.execute("SELECT * FROM duckdb_connection_count()").fetchone()
        if row is None or row[0] > 1:
            return False  # a client's session: its queries must keep the whole limit
        try:
            con.execute(f"SET memory_limit = '{RELEASE_TO}'")
        except duckdb.OutOfMemoryException:
            pass  # what is pinned stays; what could be evicted was
        finally:
            con.execute(f"SET memory_limit = '{self.memory_limit}'")
        return True

    def release_after_checkpoint(self) -> None:
        """`release_memory` once DuckDB has checkpointed since the last release (called after
        each commit): only then are the rows in the file, so evicting frees them rather than
        writing them out to temporary storage (evicting every 100,000 rows instead cost the
        writer a quarter of its rate). At the 50,000 ticks/s firehose that is every few seconds,
        at 200 ticks/s every few minutes; while a client is attached it waits."""
        try:
            wal = self.path.with_name(self.path.name + ".wal").stat().st_size
        except FileNotFoundError:
            wal = 0
        if wal < self._wal_bytes:
            self._release_due = True
        self._wal_bytes = wal
        if self._release_due and self.release_memory():
            self._release_due = False

    def close(self) -> None:
        """Stop serving, remove the endpoint, checkpoint and close the file, release the lock."""
        con, self._con = self._con, None
        if con is None:
            return
        try:
            server.stop(con, self.path)
            with contextlib.suppress(duckdb.Error):
                con.execute("CHECKPOINT")
            close_bounded(con, self.path)
        finally:
            self.endpoint = None
            self._lock.release()
            server.withdraw_start(self.path)

    def __enter__(self) -> Owner:
        self.connection(timeout_s=60.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Owner", "WarehouseBusyError", "WarehouseError"]


class _Closable(Protocol):
    def close(self) -> None: ...


def close_bounded(con: _Closable, path: Path, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
    """Close `con` in a thread of its own and wait at most `timeout_s`; False (and a warning
    naming the file) when it did not finish: it is left to finish in the background."""

    def close() -> None:
        with contextlib.suppress(duckdb.Error):
            con.close()

    closing = threading.Thread(target=close, name="warehouse-close", daemon=True)
    closing.start()
    closing.join(timeout_s)
    if not closing.is_alive():
        return True
    log.warning(
        "closing the warehouse %s took more than %.0f s (DuckDB's Quack server did not stop); "
        "everything was checkpointed, so the process goes on without waiting for it",
        path,
        timeout_s,
    )
    return False

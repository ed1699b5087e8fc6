"""Short DuckDB connections under a cross-process file lock.

DuckDB lets one process at a time hold a file read-write, and while it does nobody else can open
it, not even read-only (dagster-notes.md §4.2). So every connection here is short and taken under
`<db>.lock`, turning collisions between our own processes into short waits; a foreign holder (an
analyst's DuckDB shell) is retried with backoff until a bounded deadline, then reported by name.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
from filelock import FileLock, Timeout

from kalshi_pipeline.warehouse.schema import migrate

DEFAULT_PATH = Path("data/kalshi.duckdb")
MIN_FREE_BYTES = 64 * 1024 * 1024
# Waiters re-try the lock this often: the writer holds it for short moments several times a
# second, and a slow poll lets it win almost every time (readers then wait seconds).
LOCK_POLL_S = 0.005


class WarehouseError(RuntimeError):
    """The database cannot be used; the message names the file and the fix."""


class WarehouseBusyError(WarehouseError):
    """Another process held the database for longer than we were willing to wait."""


def default_path() -> Path:
    return Path(os.environ.get("KALSHI_DUCKDB_PATH") or DEFAULT_PATH)


class Warehouse:
    """One DuckDB file. `connect()` yields a short connection; nothing is held between calls."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock = FileLock(str(self.lock_path))

    def __repr__(self) -> str:
        return f"Warehouse({str(self.path)!r})"

    def check_writable(self) -> None:
        """Fail at start, clearly, if the file cannot be written or the disk is nearly full."""
        folder = self.path.parent if str(self.path.parent) else Path(".")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WarehouseError(
                f"cannot create the folder {folder} for the database {self.path}: {exc.strerror}; "
                "choose another path with --database or KALSHI_DUCKDB_PATH"
            ) from None
        if not os.access(folder, os.W_OK) or (
            self.path.exists() and not os.access(self.path, os.W_OK)
        ):
            raise WarehouseError(
                f"the database {self.path} is not writable by this user; fix its permissions "
                "or choose another path with --database or KALSHI_DUCKDB_PATH"
            )
        free = shutil.disk_usage(folder).free
        if free < MIN_FREE_BYTES:
            raise WarehouseError(
                f"only {free // (1024 * 1024)} MiB free on the disk of {self.path}; "
                f"at least {MIN_FREE_BYTES // (1024 * 1024)} MiB are needed: free some space"
            )

    @contextlib.contextmanager
    def connect(
        self, *, read_only: bool = False, timeout_s: float = 60.0
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection held only for the `with` block, under the file lock, retried until
        `timeout_s` while another process has the file."""
        deadline = time.monotonic() + timeout_s
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise WarehouseError(
                f"the database {self.path} does not exist yet: start the stream first "
                "(make run, or kalshi-pipeline stream)"
            )
        try:
            self._lock.acquire(timeout=max(0.0, timeout_s), poll_interval=LOCK_POLL_S)
        except Timeout:
            raise WarehouseBusyError(
                f"the database {self.path} stayed locked by another kalshi_pipeline process "
                f"for {timeout_s:.0f}s (lock file {self.lock_path})"
            ) from None
        try:
            con = self._open(read_only, deadline)
            try:
                yield con
            finally:
                con.close()
        finally:
            self._lock.release()

    def _open(self, read_only: bool, deadline: float) -> duckdb.DuckDBPyConnection:
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise WarehouseBusyError(
                        f"cannot open the database {self.path}: {exc}. Another program (a DuckDB "
                        "shell or notebook?) holds it; close it, or query the read-only replica "
                        "data/kalshi_analytics.duckdb instead"
                    ) from None
            time.sleep(min(delay * random.uniform(0.5, 1.0), max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)

    def migrate(self, timeout_s: float = 60.0) -> int:
        with self.connect(timeout_s=timeout_s) as con:
            return migrate(con)

"""The warehouse file: its name and its neighbours, opening it, and the errors that name the fix.

One process at a time may hold a DuckDB file read-write, and while it does no other process can
open it, not even read-only. So the stream's writer owns the file for its life (`owner.py`) and
serves everyone else over Quack on loopback (`server.py`); every other process goes through
`client.py`, which attaches to the owner or, when none is serving, opens the file itself under
`<db>.lock` (the lock the owner holds for its life). Only this package opens the file.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

if TYPE_CHECKING:
    import duckdb

    from kalshi_pipeline.warehouse.client import Client

DEFAULT_PATH = Path("data/kalshi.duckdb")
MIN_FREE_BYTES = 64 * 1024 * 1024
# Waiters re-try the lock this often (a client that found no owner, a starting owner).
LOCK_POLL_S = 0.005
# The storage format this DuckDB (1.5.x) writes and reads; DuckDB 2.x files carry a higher one.
STORAGE_VERSION = 64
_HOLDER_PID = re.compile(r"\(PID (\d+)\)")  # in DuckDB's "Conflicting lock is held in ..."
_HEADER = struct.Struct("<8x4sQ32x32s")  # checksum, b"DUCK", version number, flags, library


class WarehouseError(RuntimeError):
    """The database cannot be used; the message names the file and the fix."""


class WarehouseBusyError(WarehouseError):
    """Another process held the database for longer than we were willing to wait.
    `holder_pid`: the process DuckDB named as holding the file, when it did."""

    def __init__(self, message: str, holder_pid: int | None = None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid


class WarehouseVersionError(WarehouseError):
    """The file was written by a DuckDB this version cannot read (2.x)."""


def default_path() -> Path:
    return Path(os.environ.get("KALSHI_DUCKDB_PATH") or DEFAULT_PATH)


def sibling(path: Path, suffix: str) -> Path:
    """`data/kalshi.duckdb` → `data/kalshi.duckdb<suffix>` (lock, token, endpoint files)."""
    return path.with_name(path.name + suffix)


def file_lock(path: Path) -> FileLock:
    """The lock an owner holds on the database `path` for its life, and a client while it
    opens the file itself. Not thread-local (filelock's default): an owner takes it in the
    writer's thread and releases it in whichever thread stops the stream; a thread-local lock
    released from another thread was a no-op, and the stopped owner kept the file from its
    successor until the process ended."""
    return FileLock(str(sibling(path, ".lock")), thread_local=False)


def check_storage_version(path: Path) -> None:
    """Refuse, with the recipe, a file written by DuckDB 2.x before DuckDB itself fails on it.

    A DuckDB file starts with a checksum, b"DUCK", the storage version number (uint64) and, 32
    bytes later, the library version that created it (e.g. b"v2.0.1"). 1.5.5 writes version 64
    and cannot read the "v2.0.0+" storage of 2.x.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEADER.size)
    except FileNotFoundError:
        return
    if len(head) < _HEADER.size:
        return
    magic, version, library = _HEADER.unpack(head)
    if magic != b"DUCK":
        return  # not a DuckDB file at all: DuckDB's own error says so
    created_by = library.split(b"\0", 1)[0].decode("ascii", "replace") or "an unknown version"
    if version > STORAGE_VERSION or created_by.startswith("v2."):
        import duckdb

        moved = path.with_name(path.stem + ".v2" + path.suffix)
        raise WarehouseVersionError(
            f"the database {path} was written by DuckDB {created_by} (storage version {version}), "
            f"which this kalshi_pipeline (DuckDB {duckdb.__version__}) cannot read. Move it "
            f"aside: mv {path} {moved} (the next start creates a new file and loads what the "
            "landing log still holds). To keep its data, convert the moved file with DuckDB 2.x "
            "in a separate environment: python3 -m venv /tmp/duckdb2 && /tmp/duckdb2/bin/pip "
            "install 'duckdb>=2,<2.1' && /tmp/duckdb2/bin/python -c \"import duckdb; "
            f"duckdb.connect().execute(\\\"ATTACH '{moved}' AS old (READ_ONLY); ATTACH '{path}' "
            "AS new (STORAGE_VERSION 'v1.5.0'); COPY FROM DATABASE old TO new\\\")\""
        )


def open_file(
    path: Path, *, config: dict[str, Any] | None = None, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open the file (read-write unless `read_only`); a foreign holder (a DuckDB shell) is
    reported by name at once, with the holder's pid when DuckDB gives it."""
    import duckdb  # here, not at the top: the stream's receiving process never opens a file

    check_storage_version(path)
    try:
        return duckdb.connect(str(path), read_only=read_only, config=config or {})
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise WarehouseError(f"cannot open the database {path}: {exc}") from None
        holder = _HOLDER_PID.search(str(exc))
        raise WarehouseBusyError(
            f"cannot open the database {path}: {exc}. Another program (a DuckDB shell or "
            "notebook that opened the file directly?) holds it; close it, and use "
            "`kalshi-pipeline shell` or `from kalshi_pipeline.warehouse import connect` instead",
            holder_pid=int(holder.group(1)) if holder else None,
        ) from None


class Warehouse:
    """One DuckDB file, named by its path; `connect()` gives the one client API."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.lock_path = sibling(self.path, ".lock")

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

    def connect(
        self, *, create: bool = False, read_only: bool = False, timeout_s: float = 60.0
    ) -> Client:
        """A client of this file (use it in a `with` block, or close it); see client.connect."""
        from kalshi_pipeline.warehouse.client import connect

        return connect(self.path, create=create, read_only=read_only, timeout_s=timeout_s)

    def migrate(self, timeout_s: float = 60.0) -> int:
        """Create or upgrade the schema (the owner does this itself at start)."""
        from kalshi_pipeline.warehouse.schema import SCHEMA_VERSION

        with self.connect(create=True, timeout_s=timeout_s):
            return SCHEMA_VERSION

"""Handover between two stream engines on one database: make before break.

A successor engine starts while its predecessor still owns the file: it connects, subscribes
and lands frames in its own landing segments, then, once its feed is live, writes a request
beside the database (`<database>.handover`, JSON: pid, label, started_at, requested_at). The
owner sees the request on its next write cycle, stops reading, stores everything it received,
gives the file up (endpoint removed, lock released) and ends; the successor takes the file on its
next cycle and stores what it landed meanwhile (the frames both received are stored once: see
`stream/overlap.py`).

Only a newer engine (started later than the owner) can ask; a request from a process that is gone
is ignored. Two successors in quick succession: the newer one's request replaces the older one's,
and the older successor, seeing it, ends without taking over.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import msgspec

from kalshi_pipeline.warehouse.connection import sibling
from kalshi_pipeline.warehouse.server import pid_alive


class HandoverRequest(msgspec.Struct, frozen=True):
    pid: int
    label: str  # who asks, for the predecessor's last line: "run 1a2b…" or "pid 4242"
    started_at: float  # when the requesting engine started (seconds since the epoch)
    requested_at: float

    def describe(self) -> str:
        return f"{self.label} (pid {self.pid})"


def request_path(database: Path) -> Path:
    return sibling(Path(database), ".handover")


def read(database: Path) -> HandoverRequest | None:
    """The request on file, if its process is alive."""
    try:
        req = msgspec.json.decode(request_path(database).read_bytes(), type=HandoverRequest)
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError, OSError):
        return None
    return req if pid_alive(req.pid) else None


def request(database: Path, label: str, started_at: float) -> HandoverRequest:
    """Ask the owner of `database` to hand it over to this process (atomic write)."""
    req = HandoverRequest(os.getpid(), label, started_at, time.time())
    path = request_path(database)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.json.encode(req))
    os.replace(tmp, path)
    return req


def newer_than(database: Path, started_at: float) -> HandoverRequest | None:
    """A live request from another engine started after `started_at`, or None: for the owner,
    a successor to hand over to; for a waiting successor, a newer one that supersedes it."""
    req = read(database)
    if req is None or req.pid == os.getpid() or req.started_at <= started_at:
        return None
    return req


def withdraw(database: Path) -> None:
    """Remove this process's request (once it owns the file, or when it gives up)."""
    path = request_path(database)
    with contextlib.suppress(FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        if msgspec.json.decode(path.read_bytes(), type=HandoverRequest).pid == os.getpid():
            path.unlink()

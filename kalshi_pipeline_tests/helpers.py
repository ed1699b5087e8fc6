"""Shared test helpers: waiting on conditions, reading the ledger and the warehouse."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from kalshi_pipeline.bench.analysis import stored_ws_keys as _stored_ws_keys
from kalshi_pipeline.warehouse import connect

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], *, timeout: float, interval: float = 0.2, what: str = "condition"
) -> T:
    """Poll until `condition()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def wait_for_ticks(db: Path, more_than: int, what: str = "ticks stored") -> None:
    """Wait (60 s at most) until the database at `db` exists and holds more than `more_than`
    ticks: a stream process started and stores."""
    wait_for(
        lambda: db.exists() and query(db, "SELECT count(*) FROM ticks")[0][0] > more_than,
        timeout=60,
        interval=0.5,
        what=what,
    )


def read_ledger(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a line being written right now
    return out


def query(db: Path, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of one read, through the warehouse client (attached to the owner, if one runs)."""
    with connect(db, read_only=True, timeout_s=60) as con:
        return con.execute(sql, list(params)).fetchall()


def stored_ws_keys(db: Path) -> Counter[tuple[Any, ...]]:
    """Stored WebSocket ticks, keyed as `ledger_key` keys a ledger line (the bench's join)."""
    with connect(db, read_only=True, timeout_s=60) as con:
        return _stored_ws_keys(con)


def sent_indices(sessions: list[dict[str, Any]]) -> set[int]:
    """Ledger line numbers the simulator sent on any connection."""
    out: set[int] = set()
    for s in sessions:
        for first, last in s.get("sent_ranges", []):
            out.update(range(first, last + 1))
    return out


def feed_events(db: Path) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    return query(
        db, "SELECT occurred_at, source, kind, detail FROM feed_events ORDER BY occurred_at"
    )


def down_intervals(db: Path, since_kind: str = "subscribe") -> list[Any]:
    """`feed_coverage` intervals in state `down` after the first `since_kind` feed event (an
    engine's first moments, before its socket is subscribed, are down by definition)."""
    from kalshi_pipeline.warehouse.coverage import coverage_intervals, stream_serving

    with connect(db, read_only=True, timeout_s=60) as con:
        (since,) = con.execute(
            "SELECT min(occurred_at) FROM feed_events WHERE kind = ?", [since_kind]
        ).fetchone()
        assert since is not None, f"no {since_kind} event"
        intervals = coverage_intervals(con, since=since, stream_alive=stream_serving(db))
    return [iv for iv in intervals if iv.state == "down"]


class Holder:
    """Another process that holds `db` (its Python `code` prints one line once it does) until
    `release()`: an analyst's plain DuckDB, an owner of an older version."""

    def __init__(self, code: str, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.ready = self.proc.stdout.readline().strip()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        """Tell it to let go, and wait until it has."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait(timeout=60)

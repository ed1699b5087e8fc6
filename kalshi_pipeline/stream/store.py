"""The store process: the stream's writer and the warehouse's owner, in a process of their own.

Receiving and storing in one interpreter share one lock (py-spy, throughput scenario: about
13 us of it a tick, 4.8 receiving and 8 storing), so one engine process stored at most about
60k ticks/s on this machine while it could receive 180k/s alone. So the engine keeps receiving,
polling, its supervisor, its pace and the handover, and the writer (`writer.py`) with the owner
(`warehouse/owner.py`) run in a child process that the engine's write loop drives one request at
a time over a pipe: `load_once`, `drain`, `close`, as if they were in the engine. The child reads
the landing log from disk as the writer always did (the log is the hand-off; nothing else
crosses), and each reply brings back what the writer would have changed in the engine: its
counters, latencies and committed positions, the feed events it would have appended to the
landing log (the engine appends them), and its log records (re-emitted under the same logger, so
Dagster's captured logs keep them).

The child stands for its engine (`warehouse/identity.py`): the endpoint and the segments it loads
name the engine's pid. It lives and dies with the engine: it ends (closing the warehouse cleanly)
when the engine's end of the pipe closes, which a SIGKILLed engine's does too, and a child that
dies makes the engine's next request fail, which ends the engine (its run is restarted). It
ignores SIGINT: a Ctrl-C reaches the whole process group, and the engine, stopping, still needs
it to drain.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from kalshi_pipeline.stream.landing import Kind, LandingLog, Source
from kalshi_pipeline.stream.stats import EngineStats

log = logging.getLogger(__name__)

# The writer's counters, copied into the engine's stats after every request (each is written
# by the writer alone).
WRITER_FIELDS = (
    "ticks_stored",
    "ticks_stored_ws",
    "ticks_stored_http",
    "book_deltas_stored",
    "rows_loaded_batches",
    "parse_errors",
    "objects_skipped",
    "values_flagged",
    "unknown_frames",
    "backlog_bytes",
    "db_busy_since",
)
START_TIMEOUT_S = 60.0  # the child's imports, on a loaded machine
CLOSE_GRACE_S = 30.0  # the owner's close is bounded at 15 s (warehouse/owner.py), then this
DRAIN_GRACE_S = 5.0  # a drain stops between batches at its deadline: one batch may overrun it


class StoreProcessError(RuntimeError):
    """The store process ended or stopped answering; the engine must end (and be restarted)."""


@dataclass(frozen=True)
class StoreSpec:
    database: str
    landing_dir: str
    batch_rows: int
    retention_s: float
    keep_landing: bool
    engine_pid: int
    log_level: int


class StoreProcess:
    """The engine's handle on its store process. One request at a time (a lock serializes the
    write loop's cycle and a stopping engine's drain, as the writer's own lock did)."""

    def __init__(
        self,
        database: Path,
        landing_dir: Path,
        stats: EngineStats,
        landing: LandingLog,
        *,
        batch_rows: int,
        retention_s: float,
        keep_landing: bool,
    ) -> None:
        self.stats = stats
        self.landing = landing
        self.batch_rows = batch_rows
        self.keep_landing = keep_landing
        self.committed: dict[str, int] = {}
        self.is_open = False
        self._spec = StoreSpec(
            database=str(database),
            landing_dir=str(landing_dir),
            batch_rows=batch_rows,
            retention_s=retention_s,
            keep_landing=keep_landing,
            engine_pid=os.getpid(),
            log_level=logging.getLogger("kalshi_pipeline").getEffectiveLevel(),
        )
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> StoreProcess:
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "kalshi_pipeline.stream.store", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=2,  # the engine's stdout may be a protocol (the bench's runner)
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send(self._spec)
        self._request("ready", None, timeout_s=START_TIMEOUT_S)
        return self

    # ------------------------------------------------------------------ the writer's calls

    def open(self, timeout_s: float) -> bool:
        """Own the file now if it can be had within `timeout_s` (WarehouseBusyError if not);
        errors for the user (a taken port, a DuckDB 2.x file) are raised as the owner raised
        them."""
        return bool(self._request("open", timeout_s))

    def load_once(self) -> int:
        return int(self._request("load", None) or 0)

    def drain(self, deadline_s: float) -> bool:
        """Load what is left within `deadline_s`; True when nothing is. False, with a warning,
        when the store process is gone or does not answer in time (the stop goes on)."""
        self.landing.sync()  # the engine has stopped receiving: everything reaches the file
        try:
            return bool(self._request("drain", deadline_s, timeout_s=deadline_s + DRAIN_GRACE_S))
        except StoreProcessError as exc:
            log.warning("%s", exc)
            return False

    def close(self) -> None:
        """Close the warehouse and end the process; a process that does not end is killed."""
        if self._proc is None:
            return
        try:
            if not self._closed:
                with contextlib.suppress(StoreProcessError):
                    self._request("close", None, timeout_s=CLOSE_GRACE_S)
        finally:
            self._closed = True
            self.is_open = False
            self._end()

    def _end(self, grace_s: float = 10.0) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("the store process (pid %d) did not end: killing it", proc.pid)
            proc.kill()
            proc.wait()

    # ------------------------------------------------------------------ the pipe

    def _request(self, op: str, arg: Any, timeout_s: float | None = None) -> Any:
        # A stopping engine's drain or close waits for the write loop's request in flight, but
        # not forever: a store process hung in it is killed (its end then fails that request).
        if not self._lock.acquire(timeout=-1 if timeout_s is None else timeout_s):
            self._closed = True
            self.is_open = False
            if self._proc is not None:
                self._proc.kill()
            raise StoreProcessError(
                f"the store process (pid {self.pid}) was still busy after {timeout_s:.0f}s: killed"
            )
        try:
            return self._exchange(op, arg, timeout_s)
        finally:
            self._lock.release()

    def _exchange(self, op: str, arg: Any, timeout_s: float | None) -> Any:
        conn, proc = self._conn, self._proc
        if conn is None or proc is None or self._closed:
            if op in ("load", "drain"):
                return 0  # closed or dead (said once): later cycles do nothing
            raise StoreProcessError("the store process is not running")
        try:
            if op != "ready":
                conn.send((op, arg))
            end = None if timeout_s is None else time.monotonic() + timeout_s
            while not conn.poll(1.0):
                if proc.poll() is not None:
                    raise EOFError
                if end is not None and time.monotonic() > end:
                    self._closed = True
                    proc.kill()
                    raise StoreProcessError(
                        f"the store process (pid {proc.pid}) did not answer {op!r} "
                        f"within {timeout_s:.0f}s: killed"
                    )
            status, result, update = conn.recv()
        except (EOFError, OSError):
            self._closed = True
            self.is_open = False
            raise StoreProcessError(self._died(proc.wait(timeout=10))) from None
        self._apply(update)
        if status == "error":
            raise result
        return result

    def _died(self, code: int | None) -> str:
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return (
            f"the store process (pid {self.pid}), which holds the warehouse, ended unexpectedly "
            f"({how}); what was received stays in the landing log and is loaded by the next start"
        )

    def _apply(self, update: dict[str, Any]) -> None:
        stats = self.stats
        for name, value in update["stats"].items():
            setattr(stats, name, value)
        if update["lag"] or update["store"]:
            stats.record_latencies(update["lag"], update["store"])
        if update["last_event"] is not None:
            stats.last_event = update["last_event"]
        self.committed.update(update["committed"])
        self.is_open = update["is_open"]
        for kind, source, payload in update["events"]:
            self.landing.append(kind, source, payload)
        for name, level, message in update["logs"]:
            logging.getLogger(name).log(level, "%s", message)


# ---------------------------------------------------------------------- the child


class _Relay:
    """The child's stand-in for the engine's landing log: what the writer appends (its feed
    events) goes back with the reply, and the engine appends it."""

    def __init__(self) -> None:
        self.events: list[tuple[Kind, Source, bytes]] = []

    def append(self, kind: Kind, source: Source, payload: bytes) -> None:
        self.events.append((kind, source, payload))

    def sync(self) -> None:
        """The engine syncs its log before it asks for a drain."""


class _LogRelay(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.records.append((record.name, record.levelno, message))


def _picklable(exc: BaseException) -> BaseException:
    """`exc` if it crosses the pipe as it is, else a StoreProcessError saying what it was."""
    detail = "".join(traceback.format_exception(exc)).rstrip()
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own object, back from bytes we made)
    except Exception:
        return StoreProcessError(f"{type(exc).__name__}: {exc}\n(in the store process)\n{detail}")
    with contextlib.suppress(Exception):
        exc.add_note(f"(raised in the store process)\n{detail}")
    return exc


def serve(conn: Connection) -> None:
    from kalshi_pipeline.stream.writer import Writer
    from kalshi_pipeline.warehouse import identity
    from kalshi_pipeline.warehouse.owner import Owner

    spec: StoreSpec = conn.recv()
    identity.act_for(spec.engine_pid)
    logs = _LogRelay()
    root = logging.getLogger("kalshi_pipeline")
    root.addHandler(logs)
    root.setLevel(spec.log_level)
    root.propagate = False  # the engine prints what it is sent; nothing twice on stderr
    stats = EngineStats()
    relay = _Relay()
    writer = Writer(
        Owner(Path(spec.database)),
        spec.landing_dir,
        stats,
        landing=relay,
        batch_rows=spec.batch_rows,
        retention_s=spec.retention_s,
        keep_landing=spec.keep_landing,
    )
    sent: dict[str, Any] = {}
    sent_positions: dict[str, int] = {}
    last_event = stats.last_event

    def update() -> dict[str, Any]:
        nonlocal last_event
        fields = {n: getattr(stats, n) for n in WRITER_FIELDS}
        changed = {n: v for n, v in fields.items() if sent.get(n, object()) != v}
        sent.update(changed)
        moved = {s: p for s, p in writer.committed.items() if sent_positions.get(s) != p}
        sent_positions.update(moved)
        lag, store = stats.take_latencies()
        event = stats.last_event if stats.last_event != last_event else None
        last_event = stats.last_event
        out = {
            "stats": changed,
            "lag": lag,
            "store": store,
            "last_event": event,
            "committed": moved,
            "is_open": writer.owner.is_open,
            "events": relay.events,
            "logs": logs.records,
        }
        relay.events, logs.records = [], []
        return out

    conn.send(("ok", None, update()))  # ready
    try:
        while True:
            try:
                op, arg = conn.recv()
            except (EOFError, OSError):
                log.info("the engine is gone: closing the warehouse")
                return
            try:
                if op == "open":
                    writer.owner.connection(timeout_s=arg)
                    result: Any = writer.owner.is_open
                elif op == "load":
                    result = writer.load_once()
                elif op == "drain":
                    result = writer.drain(arg)
                elif op == "close":
                    writer.close()
                    result = None
                else:
                    raise ValueError(f"unknown request {op!r}")
                reply: tuple[str, Any, dict[str, Any]] = ("ok", result, update())
            except BaseException as exc:  # the engine decides: it raises it where it asked
                reply = ("error", _picklable(exc), update())
            try:
                conn.send(reply)
            except OSError:
                log.info("the engine is gone: closing the warehouse")
                return
            if op == "close":
                return
    finally:
        writer.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kalshi_pipeline.stream.store")
    p.add_argument("fd", type=int, help="this process's end of the engine's pipe")
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from kalshi_pipeline.stream.lean import lean

    lean()  # this process only stores: no pandas, Arrow on the system allocator
    code = 0
    try:
        serve(Connection(args.fd))
    except BaseException:  # before the first request (the engine reports the exit code)
        traceback.print_exc()
        code = 1
    # the owner is closed: skip a teardown DuckDB 1.5.5 may hang in after serving Quack
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())

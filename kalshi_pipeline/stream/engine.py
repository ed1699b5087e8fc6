"""The engine: the one entry point that the Dagster op, the CLI and the benchmarks call.

`Engine.start()` checks the database path and credentials, then runs the writer, the poller and
the WebSocket feed (in an asyncio loop) on threads of their own, so the caller's main thread stays
free to wait with timeouts and receive signals or Dagster's interrupt. `Engine.stop()` stops
reading, flushes, records the stop and returns within its timeout (10 s by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from kalshi_pipeline.kalshi.errors import KalshiConfigError
from kalshi_pipeline.stream.config import Mode, StreamConfig
from kalshi_pipeline.stream.events import FeedEvents
from kalshi_pipeline.stream.landing import LandingLog
from kalshi_pipeline.stream.poller import Poller
from kalshi_pipeline.stream.stats import EngineStats
from kalshi_pipeline.stream.supervisor import Supervisor
from kalshi_pipeline.stream.writer import Writer
from kalshi_pipeline.stream.wsfeed import WebSocketFeed
from kalshi_pipeline.warehouse import Warehouse, WarehouseBusyError, WarehouseError
from kalshi_pipeline.warehouse.connection import MIN_FREE_BYTES
from kalshi_pipeline.warehouse.owner import Owner
from kalshi_pipeline.warehouse.paths import adopt_legacy_landing, prepare_database_folder

log = logging.getLogger(__name__)

# The write loop's pace (see Engine._write_loop): commit once this many frames or pages wait,
# but not sooner than the floor after the previous cycle began; look every WAIT_STEP_S.
COMMIT_RECORDS = 50
COMMIT_FLOOR_S = 0.02
WAIT_STEP_S = 0.01


class EngineError(RuntimeError):
    """A part of the engine stopped unexpectedly; the run should end and be restarted."""


class Engine:
    def __init__(self, config: StreamConfig) -> None:
        self.config = config.validate()
        self.stats = EngineStats()
        self.warehouse = Warehouse(config.database)
        self.owner = Owner(config.database)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._stopped = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ws_feed: WebSocketFeed | None = None

    # ------------------------------------------------------------------ start

    def _check_landing(self) -> None:
        folder = self.config.landing
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WarehouseError(
                f"cannot create the landing folder {folder}: {exc.strerror}; "
                "choose another database path (the landing log lives beside it)"
            ) from None
        if not os.access(folder, os.W_OK):
            raise WarehouseError(f"the landing folder {folder} is not writable by this user")
        free = shutil.disk_usage(folder).free
        if free < MIN_FREE_BYTES:
            raise WarehouseError(
                f"only {free // (1024 * 1024)} MiB free on the disk of {folder}; "
                "free some space before streaming"
            )

    def start(self) -> Engine:
        cfg = self.config
        if cfg.debug:  # WEBSOCKET_DEBUG, as the predecessor's flag: the feed's detail at DEBUG
            for name in ("kalshi_pipeline.stream", "kalshi_pipeline.feed"):
                logging.getLogger(name).setLevel(logging.DEBUG)
        # Said once, in the log and in feed_events: a folder created, an old landing log moved.
        notes = [("database_folder_created", prepare_database_folder(cfg.database))]
        if cfg.landing_dir is None:
            legacy = adopt_legacy_landing(cfg.database)
            notes.append(("landing_moved", legacy.message if legacy else None))
        self.warehouse.check_writable()
        self._check_landing()
        signer = None
        if cfg.mode in (Mode.WEBSOCKET, Mode.BOTH):
            signer = cfg.kalshi.signer()  # fails now, naming the variable, if credentials lack
        elif cfg.kalshi.credentials_problem():
            raise KalshiConfigError(cfg.kalshi.credentials_problem() or "")
        # Own the file now, so a taken port or an unreadable file fails the start; while another
        # engine still owns it (a handover) the writer keeps trying, and the log grows meanwhile.
        with contextlib.suppress(WarehouseBusyError):
            self.owner.connection(timeout_s=2.0)
        self.landing = LandingLog(cfg.landing)
        self.events = FeedEvents(self.landing, self.stats)
        self.writer = Writer(
            self.owner,
            cfg.landing,
            self.stats,
            landing=self.landing,
            batch_rows=cfg.flush_rows,
            retention_s=cfg.retention_s,
        )
        self.poller = Poller(cfg, self.landing, self.stats, self.events)
        self.supervisor = Supervisor(
            cfg, self.poller, self.events, self.stats, lambda: self.writer.committed
        )
        self.poller.on_pass = self.supervisor.on_pass
        self.events.emit(
            "engine",
            "start",
            f"mode={cfg.mode.value} fallback_to_http={cfg.fallback_to_http} "
            f"scope={cfg.scope.describe()} env={cfg.kalshi.env.value} database={cfg.database} "
            f"pid={os.getpid()}",
        )
        for kind, note in notes:
            if note:
                log.warning("%s", note)
                self.events.emit("engine", kind, note)
        self._spawn(self._write_loop, "kalshi-writer")
        self.poller.start()
        self.supervisor.start()
        if signer is not None:
            self.ws_feed = WebSocketFeed(
                cfg,
                signer,
                self.landing,
                self.stats,
                self.events,
                on_up=self.supervisor.on_ws_up,
                on_failure=self.supervisor.on_ws_failure,
                on_silence=self.supervisor.on_ws_silence,
                on_gap=self.supervisor.on_ws_down,
            )
            self._spawn(self._ws_loop, "kalshi-websocket")
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=self._guard(target), name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                if self.error is None:
                    self.error = exc
                log.exception("%s stopped by an unexpected error", threading.current_thread().name)
                self._stop.set()

        return run

    # ------------------------------------------------------------------ loops

    def _records_received(self) -> int:
        return self.stats.ws_frames + self.stats.http_pages

    def _write_loop(self) -> None:
        """Commit when enough has arrived to be worth a commit, or when the oldest record has
        waited `flush_interval_ms`; back to back while catching up.

        A commit costs about the same CPU whatever its size (most of it DuckDB's per-statement
        overhead), so committing every few milliseconds at a low rate would burn a core, and a
        fixed interval makes every tick wait half of it on average. So: after each commit, wait
        until COMMIT_RECORDS more frames or pages have arrived (at 1,000 ticks/s: 50 ms) but at
        least COMMIT_FLOOR_S, or until the interval is up (at 200 ticks/s: 4 commits a second).
        The landing log is fsynced once per interval whatever the commit rate.
        """
        interval = self.config.flush_interval_ms / 1000
        floor = min(COMMIT_FLOOR_S, interval)
        synced = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            if started - synced >= interval:
                self.landing.sync()
                synced = started
            else:
                self.landing.flush()  # the poller's pages reach the file (no fsync)
            mark = self._records_received()
            loaded = self.writer.load_once()
            self.supervisor.tick()
            if loaded >= self.writer.batch_rows:
                continue  # catching up: no pause
            due = started + interval
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= due or (
                    now - started >= floor and self._records_received() - mark >= COMMIT_RECORDS
                ):
                    break
                self._stop.wait(min(WAIT_STEP_S, due - now))

    def _ws_loop(self) -> None:
        assert self.ws_feed is not None
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.ws_feed.run())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # ------------------------------------------------------------------ stop

    @property
    def running(self) -> bool:
        return not self._stop.is_set()

    def check(self) -> None:
        """Raise if a part of the engine died (the caller should end the run)."""
        err = self.error or self.poller.error
        if err is not None:
            raise EngineError(f"the stream engine failed: {type(err).__name__}: {err}") from err

    def stop(self, timeout_s: float = 10.0, reason: str = "requested") -> bool:
        """Stop reading, flush, store what can be stored in time. True when nothing is left."""
        if self._stopped:
            return self.stats.backlog_bytes == 0
        self._stopped = True
        if not hasattr(self, "writer"):  # start() failed before anything ran
            self._stop.set()
            if hasattr(self, "landing"):
                self.landing.close()
            self.owner.close()
            return True
        deadline = time.monotonic() + timeout_s
        self.events.emit("engine", "stop", reason)
        self._stop.set()
        if self.ws_feed is not None and self._loop is not None and self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self.ws_feed.stop(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(timeout=min(3.0, max(0.1, deadline - time.monotonic() - 2)))
        self.poller.stop()
        for t in self._threads:
            t.join(timeout=max(0.0, min(3.0, deadline - time.monotonic() - 2)))
        self.poller.thread.join(timeout=max(0.0, min(1.0, deadline - time.monotonic() - 2)))
        self.landing.sync()
        drained = self.writer.drain(max(0.5, deadline - time.monotonic() - 0.3))
        self.landing.close()
        self.writer.close()
        if not drained:
            log.warning(
                "stopped with %d bytes not yet in the database; they stay in %s and are "
                "loaded by the next start",
                self.stats.backlog_bytes,
                self.config.landing,
            )
        return drained

    def summary(self) -> dict[str, Any]:
        return self.stats.snapshot()


def run_engine(
    config: StreamConfig,
    stop: threading.Event | None = None,
    *,
    seconds: float | None = None,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    status_every_s: float = 1.0,
) -> dict[str, Any]:
    """Run until `stop` is set, `seconds` pass, or an interrupt; always stops cleanly."""
    stop = stop or threading.Event()
    engine = Engine(config).start()
    deadline = time.monotonic() + seconds if seconds is not None else None
    reason = "requested"
    try:
        while not stop.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                reason = f"ran for {seconds}s"
                break
            stop.wait(status_every_s if remaining is None else min(status_every_s, remaining))
            engine.check()
            if on_status is not None:
                on_status(engine.summary())
    except BaseException as exc:
        reason = f"interrupted ({type(exc).__name__})"
        raise
    finally:
        engine.stop(reason=reason)
    return engine.summary()

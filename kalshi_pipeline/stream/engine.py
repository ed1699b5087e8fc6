"""The engine: the one entry point that the Dagster op, the CLI and the benchmarks call.

`Engine.start()` checks the database path and credentials, starts the store process (the writer
and the warehouse's owner, `store.py`: storing in a process of its own keeps it off the receiving
thread's interpreter lock), then runs the write loop that paces it, the poller and the WebSocket
feed (in an asyncio loop) on threads of their own, so the caller's main thread stays free to wait
with timeouts and receive signals or Dagster's interrupt. `Engine.stop()` stops reading, flushes,
has the store process load what is left, records the stop and returns within its timeout (10 s
by default).

Handover (make before break, `warehouse/handover.py`): an engine that starts while another one
owns the database is its successor. It connects, subscribes and lands frames at once; when its
feed is live it asks the owner to hand over, and takes the file when the owner lets go. The owner,
asked, sets `finished` ("handed over to ..."), and whoever runs it (the Dagster op, the CLI) then
stops it as usual. A successor not live within `handover_timeout_s` gives up and fails, its
predecessor never disturbed; one overtaken by a newer successor ends (`finished` "superseded").
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
from pathlib import Path
from typing import Any

from kalshi_pipeline.kalshi.errors import KalshiConfigError
from kalshi_pipeline.stream.backfill import TradeBackfill
from kalshi_pipeline.stream.config import TRADE_CHANNEL, Mode, StreamConfig
from kalshi_pipeline.stream.events import FeedEvents
from kalshi_pipeline.stream.landing import LandingLog, list_segments
from kalshi_pipeline.stream.poller import Poller
from kalshi_pipeline.stream.stats import EngineStats
from kalshi_pipeline.stream.store import StoreProcess
from kalshi_pipeline.stream.supervisor import Supervisor
from kalshi_pipeline.stream.wsfeed import WebSocketFeed
from kalshi_pipeline.warehouse import (
    Warehouse,
    WarehouseBusyError,
    WarehouseError,
    handover,
    server,
)
from kalshi_pipeline.warehouse.connection import MIN_FREE_BYTES
from kalshi_pipeline.warehouse.paths import adopt_legacy_landing, prepare_database_folder

log = logging.getLogger(__name__)

# The write loop's pace (see Engine._write_loop): commit once this many frames or pages wait,
# but not sooner than the floor after the previous cycle began.
COMMIT_RECORDS = 50
COMMIT_FLOOR_S = 0.02


class EngineError(RuntimeError):
    """A part of the engine stopped unexpectedly; the run should end and be restarted."""


class HandoverError(EngineError):
    """A successor could not take over: its feed was not live in time (the owner streams on)."""


class Engine:
    def __init__(self, config: StreamConfig, label: str | None = None) -> None:
        self.config = config.validate()
        self.label = label or f"pid {os.getpid()}"  # how a predecessor names us: "run 1a2b..."
        self.started_at = time.time()
        self.finished: str | None = None  # set when the engine should end normally, and why
        # overtaken by a newer engine before taking over: the warehouse is that engine's
        self.superseded = False
        self.predecessor: int | None = None  # pid of the owner this engine waits to succeed
        self._waiting_since: float | None = None
        self._requested_at: float | None = None
        self.stall_reported = False  # `handover_stalled` recorded
        self.stats = EngineStats()
        self.warehouse = Warehouse(config.database)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._stopped = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ws_feed: WebSocketFeed | None = None
        self.backfill: TradeBackfill | None = None  # trades lost on the socket, from REST

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
        self.landing = LandingLog(cfg.landing)
        # The writer and the warehouse's owner run in a process of their own (`store.py`).
        self.writer = StoreProcess(
            cfg.database,
            cfg.landing,
            self.stats,
            self.landing,
            batch_rows=cfg.flush_rows,
            retention_s=cfg.retention_s,
            keep_landing=cfg.keep_landing,
        )
        try:
            self.writer.start()
            # Own the file now, so a taken port or an unreadable file fails the start; while
            # another engine still owns it (a handover) the writer keeps trying, and the log
            # grows meanwhile.
            with contextlib.suppress(WarehouseBusyError):
                self.writer.open(timeout_s=2.0)
        except BaseException:
            self.writer.close()
            self.landing.close()
            raise
        if not self.writer.is_open:
            endpoint = server.live_endpoint(cfg.database)
            if endpoint is not None and endpoint.pid != os.getpid():
                self.predecessor = endpoint.pid
                self._waiting_since = time.monotonic()
        self.events = FeedEvents(self.landing, self.stats)
        self.poller = Poller(cfg, self.landing, self.stats, self.events)
        self.supervisor = Supervisor(
            cfg, self.poller, self.events, self.stats, lambda: self.writer.committed
        )
        self.poller.on_pass = self.supervisor.on_pass
        self.events.emit(
            "engine",
            "start",
            f"mode={cfg.mode.value} fallback_to_http={cfg.fallback_to_http} "
            f"scope={cfg.scope.describe()} channels={','.join(cfg.channels)} "
            f"env={cfg.kalshi.env.value} database={cfg.database} "
            f"pid={os.getpid()} label={self.label}"
            + (f" successor_of=pid {self.predecessor}" if self.predecessor else ""),
        )
        for kind, note in notes:
            if note:
                log.warning("%s", note)
                self.events.emit("engine", kind, note)
        self._spawn(self._write_loop, "kalshi-writer")
        self.poller.start()
        self.supervisor.start()
        if signer is not None:
            if cfg.streams(TRADE_CHANNEL):
                self.backfill = TradeBackfill.for_stream(cfg, self.landing, self.events)
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
                on_trade_gap=self.backfill.on_trade_gap if self.backfill else _no_backfill,
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
                if isinstance(exc, HandoverError):
                    log.error("%s", exc)
                else:
                    name = threading.current_thread().name
                    log.exception("%s stopped by an unexpected error", name)
                self._halt()

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
            self._handover_cycle()
            if loaded >= self.writer.batch_rows:
                continue  # catching up: no pause
            # sleep until COMMIT_RECORDS more have arrived (the feed and the poller set
            # `arrivals`), the interval is up, or the engine stops (which sets it too)
            arrivals = self.stats.arrivals
            self.stats.wake_at = mark + COMMIT_RECORDS
            arrivals.clear()
            if self._records_received() >= self.stats.wake_at:
                arrivals.set()  # they arrived before the clear
            arrivals.wait(max(0.0, started + interval - time.monotonic()))
            rest = started + floor - time.monotonic()
            if rest > 0:
                self._stop.wait(rest)

    # ------------------------------------------------------------------ handover

    @property
    def live(self) -> bool:
        """The configured feed delivers: the socket subscribed, polling passes completing."""
        mode = self.config.mode
        ws = self.supervisor.ws_up
        polled = self.supervisor.passes_ok > 0
        if mode is Mode.WEBSOCKET:
            return ws
        if mode is Mode.HTTP:
            return polled
        return ws and polled

    @property
    def handover_stalled(self) -> bool:
        """Asked the owner to hand over a while ago and it has not: it may not listen."""
        return (
            self._requested_at is not None
            and not self.writer.is_open
            and time.monotonic() - self._requested_at > self.config.handover_stall_s
        )

    def _handover_cycle(self) -> None:
        if self.finished is not None:
            return
        db = self.config.database
        if self.writer.is_open:
            if self._waiting_since is not None:  # we were waiting, and now we own the file
                waited = time.monotonic() - self._waiting_since
                self._waiting_since = self._requested_at = None
                handover.withdraw(db)
                self.events.emit(
                    "engine",
                    "handover",
                    f"took over the warehouse from pid {self.predecessor} after {waited:.1f}s "
                    "of receiving side by side",
                )
            req = handover.newer_than(db, self.started_at)
            if req is not None:
                self.finished = f"handed over to {req.describe()}"
                log.info("%s asks for the warehouse: handing over", req.describe())
            return
        if self._waiting_since is None:
            return  # not a successor: the file is held by someone else (the writer retries)
        newer = handover.newer_than(db, self.started_at)
        if newer is not None:
            self.finished = f"superseded by {newer.describe()} before taking over"
            self.superseded = True
            return
        endpoint = server.live_endpoint(db)
        if endpoint is not None and endpoint.pid not in (self.predecessor, os.getpid()):
            # Another engine took the file while we waited (our predecessor let go, or died, and
            # it was quicker): the newest engine streams, so yield to it or ask it in turn.
            started = _engine_started(self.config.landing, endpoint.pid)
            if started is not None and started > self.started_at:
                self.finished = f"superseded by pid {endpoint.pid}, which took over first"
                self.superseded = True
                return
            self.predecessor, self._requested_at = endpoint.pid, None
        if self.handover_stalled and not self.stall_reported:
            self.stall_reported = True
            self.events.emit(
                "engine",
                "handover_stalled",
                f"pid {self.predecessor} has not handed the warehouse over "
                f"{self.config.handover_stall_s:g}s after {self.label} asked (an older version, "
                "or a hung process); still receiving into the landing log meanwhile",
            )
            log.warning("pid %s does not answer the handover request", self.predecessor)
        if self.live:
            if self._requested_at is None:
                handover.request(db, self.label, self.started_at)
                self._requested_at = time.monotonic()
                self.events.emit(
                    "engine",
                    "handover_requested",
                    f"{self.label} (pid {os.getpid()}) is live after "
                    f"{time.monotonic() - self._waiting_since:.1f}s; asked pid "
                    f"{self.predecessor} to hand the warehouse over",
                )
            return
        waited = time.monotonic() - self._waiting_since
        if waited > self.config.handover_timeout_s:
            why = (
                f"{self.label} could not take over from pid {self.predecessor}: its "
                f"{self.config.mode.value} feed was not live within handover_timeout_s="
                f"{self.config.handover_timeout_s:g}s (last: {self.stats.last_event or 'nothing'});"
                f" pid {self.predecessor} keeps streaming"
            )
            self.events.emit("engine", "handover_failed", why)
            raise HandoverError(why)

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

    def _halt(self) -> None:
        """Tell every loop to end (the write loop sleeps on `arrivals`: wake it too)."""
        self._stop.set()
        self.stats.arrivals.set()

    def stop(self, timeout_s: float = 10.0, reason: str = "requested") -> bool:
        """Stop reading, flush, store what can be stored in time. True when nothing is left."""
        if self._stopped:
            return self.stats.backlog_bytes == 0
        self._stopped = True
        if not hasattr(self, "events"):  # start() failed before anything ran
            self._halt()
            return True
        deadline = time.monotonic() + timeout_s
        self.events.emit("engine", "stop", reason)
        self._halt()
        if self.ws_feed is not None and self._loop is not None and self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self.ws_feed.stop(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(timeout=min(3.0, max(0.1, deadline - time.monotonic() - 2)))
        self.poller.stop()
        for t in self._threads:
            t.join(timeout=max(0.0, min(3.0, deadline - time.monotonic() - 2)))
        self.poller.thread.join(timeout=max(0.0, min(1.0, deadline - time.monotonic() - 2)))
        if self.backfill is not None:
            self.backfill.close()  # before the landing log closes: it lands what it fetched
        self.landing.sync()
        # Overtaken by a newer engine before taking over: the warehouse is that engine's, and its
        # writer loads every segment of the shared landing log, ours too. Nothing to drain here.
        drained = self.superseded or self.writer.drain(max(0.5, deadline - time.monotonic() - 0.3))
        self.landing.close()
        self.writer.close()
        if self.superseded and self.stats.backlog_bytes:
            log.info(
                "stopped with %d bytes received but not loaded by this engine; they stay in %s, "
                "where the engine that took over loads them",
                self.stats.backlog_bytes,
                self.config.landing,
            )
        elif not drained:
            log.warning(
                "stopped with %d bytes not yet in the database; they stay in %s and are "
                "loaded by the next start",
                self.stats.backlog_bytes,
                self.config.landing,
            )
        return drained

    def summary(self, fresh: bool = False) -> dict[str, Any]:
        """The stats now (`EngineStats.snapshot`; `fresh`: latency percentiles as of now)."""
        return self.stats.snapshot(fresh)


def _no_backfill(since_ms: int, until_ms: int, tickers: list[str] | None) -> None:
    """Without the trade channel there is no trade gap to fill."""


def _engine_started(landing: os.PathLike[str] | str, pid: int) -> float | None:
    """When the engine `pid` started landing frames (its first segment's name says)."""
    starts = [s.start_ms for s in list_segments(Path(landing)) if s.pid == pid]
    return min(starts) / 1000 if starts else None


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
            if engine.finished is not None:
                reason = engine.finished
                break
            if on_status is not None:
                on_status(engine.summary())
    except BaseException as exc:
        reason = f"interrupted ({type(exc).__name__})"
        raise
    finally:
        drained = engine.stop(reason=reason)
    # drained: nothing this engine received waits on it (stored, or left to the engine that
    # took over, which loads the shared landing log)
    return {**engine.summary(fresh=True), "ended": reason, "drained": drained}

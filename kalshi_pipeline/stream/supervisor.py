"""The supervisor: which feeds run, and the fallback rules between them.

- `http`: polling only. `both`: the socket and polling together, both stored.
- `websocket`: the socket, with one reconciliation pass at start and after every reconnect.
  With `fallback_to_http`, polling starts when the socket fails `max_retries` attempts in a row
  or goes silent for `websocket_timeout_s`; it stops only after the socket is back, subscribed,
  and one reconciliation pass made after that is stored. So there is never a moment without a
  running feed, and each transition is a feed event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kalshi_pipeline.stream.config import Mode, StreamConfig
from kalshi_pipeline.stream.events import FeedEvents
from kalshi_pipeline.stream.poller import PassResult, Poller
from kalshi_pipeline.stream.stats import EngineStats


class Supervisor:
    def __init__(
        self,
        config: StreamConfig,
        poller: Poller,
        events: FeedEvents,
        stats: EngineStats,
        committed: Callable[[], dict[str, int]],
    ) -> None:
        self.config = config
        self.poller = poller
        self.events = events
        self.stats = stats
        self.committed = committed
        self._lock = threading.Lock()
        self.fallback_active = False
        self._end_after_pass: int | None = None  # the reconciling pass that may end fallback
        self._end_at: tuple[str, int] | None = None  # its landing position, once it is done
        self._ws_up = False
        self.passes_ok = 0  # polling or reconciling passes completed

    @property
    def ws_up(self) -> bool:
        """The socket is connected and subscribed."""
        return self._ws_up

    def start(self) -> None:
        mode = self.config.mode
        if mode in (Mode.HTTP, Mode.BOTH):
            self.poller.set_polling(True)
        else:
            self.poller.request_reconcile()

    # ------------------------------------------------------------------ from the socket

    def on_ws_up(self) -> None:
        with self._lock:
            self._ws_up = True
            if self.config.mode is not Mode.WEBSOCKET:
                return
            ticket = self.poller.request_reconcile()
            if self.fallback_active:
                self._end_after_pass = ticket
                self._end_at = None
                self.events.emit(
                    "engine",
                    "fallback_ending",
                    f"the socket is back and subscribed; polling stops after pass {ticket} "
                    "(a reconciliation) is stored",
                )

    def on_ws_down(self) -> None:
        with self._lock:
            self._ws_up = False
            self._end_after_pass = None
            self._end_at = None

    def on_ws_failure(self, failures: int, why: str) -> None:
        self.on_ws_down()
        if failures >= self.config.max_retries:
            self._start_fallback(f"{failures} connection attempts in a row failed (last: {why})")

    def on_ws_silence(self) -> None:
        self.on_ws_down()
        limit = self.config.websocket_timeout_s
        self._start_fallback(f"the socket was silent for more than websocket_timeout_s={limit}s")

    def _start_fallback(self, why: str) -> None:
        if self.config.mode is not Mode.WEBSOCKET or not self.config.fallback_to_http:
            return
        with self._lock:
            if self.fallback_active:
                return
            self.fallback_active = True
            self.stats.fallbacks += 1
            self.stats.fallback_since = time.monotonic()
            self.poller.set_polling(True)
        self.events.emit("engine", "fallback_start", f"HTTP polling started: {why}")

    # ------------------------------------------------------------------ from the poller

    def on_pass(self, result: PassResult) -> None:
        with self._lock:
            if result.ok:
                self.passes_ok += 1
            if (
                self.fallback_active
                and self._end_after_pass is not None
                and result.ok
                and result.pass_id >= self._end_after_pass
            ):
                self._end_at = (result.segment, result.end)

    # ------------------------------------------------------------------ from the engine's loop

    def tick(self) -> None:
        """Called often: ends fallback once the reconciling pass is in the database."""
        with self._lock:
            if not (self.fallback_active and self._ws_up and self._end_at is not None):
                return
            segment, end = self._end_at
            if self.committed().get(segment, 0) < end:
                return
            self.fallback_active = False
            self._end_after_pass = None
            self._end_at = None
            if self.stats.fallback_since is not None:
                self.stats.fallback_seconds += time.monotonic() - self.stats.fallback_since
                self.stats.fallback_since = None
            self.poller.set_polling(False)
        self.events.emit(
            "engine", "fallback_end", "HTTP polling stopped: the socket is back and reconciled"
        )

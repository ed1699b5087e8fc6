"""Counters the engine keeps for the live status line, the Dagster metadata and `status`."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

# How often the latency percentiles of a snapshot are worked out again, at most: the status line
# and the Dagster op ask every second, and sorting the 20,000 latencies kept twice each time was
# about a tenth of the engine process's CPU at 200 ticks/s (py-spy: 53 of its 481 samples; the
# thread that asks went from 0.25 to 0.07 % of a core).
PERCENTILES_EVERY_S = 5.0


def _at(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class EngineStats:
    """Plain counters; each is written by one thread, read by any (ints are atomic enough)."""

    started_monotonic: float = field(default_factory=time.monotonic)
    ws_frames: int = 0
    ws_bytes: int = 0
    http_pages: int = 0
    http_bytes: int = 0
    ticks_stored: int = 0
    ticks_stored_ws: int = 0
    ticks_stored_http: int = 0
    book_deltas_stored: int = 0  # order-book delta rows committed
    rows_loaded_batches: int = 0
    parse_errors: int = 0
    objects_skipped: int = 0  # objects of a REST page that could not be read at all
    values_flagged: int = 0  # values stored despite breaking the spec (see feed_events)
    unknown_frames: int = 0
    reconnects: int = 0
    connects: int = 0
    fallbacks: int = 0
    fallback_seconds: float = 0.0
    fallback_since: float | None = None
    backlog_bytes: int = 0
    db_busy_since: float | None = None
    last_event: str = ""
    ws_connected: bool = False
    polling: bool = False
    _lag_ms: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    _store_ms: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # The write loop sleeps on `arrivals` until `wake_at` frames and pages have arrived in all
    # (or its interval is up): one wake per commit, not a look every few milliseconds (on this
    # kind of machine a wake-up from sleep costs more CPU than the look itself).
    arrivals: threading.Event = field(default_factory=threading.Event)
    wake_at: int = 0
    percentiles_every_s: float = PERCENTILES_EVERY_S
    _latencies_added: int = 0  # latencies recorded so far, all told
    # (latencies_added, monotonic time, lag p50, lag p99, store p50, store p99) when last worked out
    _percentiles: (
        tuple[int, float, float | None, float | None, float | None, float | None] | None
    ) = None

    def records_arrived(self) -> None:
        """A frame or page was appended to the landing log (after its counter was raised)."""
        if self.ws_frames + self.http_pages >= self.wake_at and not self.arrivals.is_set():
            self.arrivals.set()

    def record_latencies(self, lag_ms: list[float], store_ms: list[float]) -> None:
        with self._lock:
            self._lag_ms.extend(lag_ms)
            self._store_ms.extend(store_ms)
            self._latencies_added += len(lag_ms) + len(store_ms)

    def take_latencies(self) -> tuple[list[float], list[float]]:
        """The latencies recorded since the last call, emptied (the store process sends them to
        its engine's stats)."""
        with self._lock:
            lag, store = list(self._lag_ms), list(self._store_ms)
            self._lag_ms.clear()
            self._store_ms.clear()
        return lag, store

    def total_fallback_seconds(self) -> float:
        extra = time.monotonic() - self.fallback_since if self.fallback_since else 0.0
        return self.fallback_seconds + extra

    def active_source(self) -> str:
        if self.ws_connected and self.polling:
            return "both"
        if self.ws_connected:
            return "websocket"
        if self.polling:
            return "http"
        return "none"

    def _latency_percentiles(self, fresh: bool) -> tuple[float | None, ...]:
        """p50 and p99 of the lag and of the store latency kept; worked out again when
        latencies came since and `percentiles_every_s` passed (or `fresh`, or the last ones were
        worked out before any latency came)."""
        now = time.monotonic()
        with self._lock:
            last = self._percentiles
            added = self._latencies_added
            if last is not None and (
                last[0] == added
                or (not fresh and last[0] > 0 and now - last[1] < self.percentiles_every_s)
            ):
                return last[2:]
            lag = list(self._lag_ms)
            store = list(self._store_ms)
        lag.sort()
        store.sort()
        values = (_at(lag, 0.5), _at(lag, 0.99), _at(store, 0.5), _at(store, 0.99))
        with self._lock:
            self._percentiles = (added, now, *values)
        return values

    def snapshot(self, fresh: bool = False) -> dict[str, float | int | str | None]:
        """The counters now, and the latency percentiles as of at most `percentiles_every_s`
        ago (`fresh`: as of now)."""
        lag_p50, lag_p99, store_p50, store_p99 = self._latency_percentiles(fresh)
        elapsed = max(1e-9, time.monotonic() - self.started_monotonic)
        return {
            "uptime_s": round(elapsed, 1),
            "ticks_stored": self.ticks_stored,
            "ticks_stored_websocket": self.ticks_stored_ws,
            "ticks_stored_http": self.ticks_stored_http,
            "ticks_per_s": round(self.ticks_stored / elapsed, 2),
            "ws_frames": self.ws_frames,
            "http_pages": self.http_pages,
            "lag_p50_ms": lag_p50,
            "lag_p99_ms": lag_p99,
            "store_p50_ms": store_p50,
            "store_p99_ms": store_p99,
            "reconnects": self.reconnects,
            "fallbacks": self.fallbacks,
            "fallback_seconds": round(self.total_fallback_seconds(), 1),
            "parse_errors": self.parse_errors,
            "objects_skipped": self.objects_skipped,
            "values_flagged": self.values_flagged,
            "unknown_frames": self.unknown_frames,
            "backlog_bytes": self.backlog_bytes,
            "source": self.active_source(),
            "last_event": self.last_event,
        }

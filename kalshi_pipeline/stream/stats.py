"""Counters the engine keeps for the live status line, the Dagster metadata and `status`."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
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

    def records_arrived(self) -> None:
        """A frame or page was appended to the landing log (after its counter was raised)."""
        if self.ws_frames + self.http_pages >= self.wake_at and not self.arrivals.is_set():
            self.arrivals.set()

    def record_latencies(self, lag_ms: list[float], store_ms: list[float]) -> None:
        with self._lock:
            self._lag_ms.extend(lag_ms)
            self._store_ms.extend(store_ms)

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

    def snapshot(self) -> dict[str, float | int | str | None]:
        with self._lock:
            lag = list(self._lag_ms)
            store = list(self._store_ms)
        elapsed = max(1e-9, time.monotonic() - self.started_monotonic)
        return {
            "uptime_s": round(elapsed, 1),
            "ticks_stored": self.ticks_stored,
            "ticks_stored_websocket": self.ticks_stored_ws,
            "ticks_stored_http": self.ticks_stored_http,
            "ticks_per_s": round(self.ticks_stored / elapsed, 2),
            "ws_frames": self.ws_frames,
            "http_pages": self.http_pages,
            "lag_p50_ms": percentile(lag, 0.5),
            "lag_p99_ms": percentile(lag, 0.99),
            "store_p50_ms": percentile(store, 0.5),
            "store_p99_ms": percentile(store, 0.99),
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

"""A token bucket: the client's request limiter and the simulator's rate limit share it."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """`rate` tokens per second, holding at most `capacity`. Thread-safe.

    `try_acquire` never waits (the simulator answers 429 when it fails); `acquire` sleeps
    until the tokens are there (the client's limiter), and returns how long it waited.
    """

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else rate)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self, cost: float = 1.0) -> bool:
        with self._lock:
            self._refill(time.monotonic())
            if self._tokens >= cost:
                self._tokens -= cost
                return True
            return False

    def reserve(self, cost: float = 1.0) -> float:
        """Take `cost` tokens now, going into debt; return the seconds to wait before using them."""
        with self._lock:
            self._refill(time.monotonic())
            self._tokens -= cost
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self, cost: float = 1.0) -> float:
        wait = self.reserve(cost)
        if wait > 0:
            time.sleep(wait)
        return wait

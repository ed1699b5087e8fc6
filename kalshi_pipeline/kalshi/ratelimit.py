"""A token bucket, and Kalshi's rate-limit tiers: the client's request limiter and the
simulator's rate limit share the bucket; the tier (KALSHI_RATE_TIER) sizes the client's.

Kalshi counts read tokens, 10 a request by default. Since September
2026 Basic still has 200 read tokens/s (20 reads/s), Premier and above have 20% more than
before, and the Basic and Advanced read buckets hold 3 s of budget; higher tiers hold 1 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from kalshi_pipeline.kalshi.errors import KalshiConfigError

RATE_TIER_VAR = "KALSHI_RATE_TIER"
READ_COST_TOKENS = 10  # Kalshi's default cost of one request


class TokenBucket:
    """`rate` tokens per second, holding at most `capacity`. Thread-safe.

    `try_acquire` never waits (the simulator answers 429 when it fails); `acquire` sleeps
    until the tokens are there (the client's limiter), and returns how long it waited.
    `clock` (monotonic seconds) and `sleep` are replaceable so tests can drive time.
    """

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else rate)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self, cost: float = 1.0) -> bool:
        with self._lock:
            self._refill(self._clock())
            if self._tokens >= cost:
                self._tokens -= cost
                return True
            return False

    def reserve(self, cost: float = 1.0) -> float:
        """Take `cost` tokens now, going into debt; return the seconds to wait before using them."""
        with self._lock:
            self._refill(self._clock())
            self._tokens -= cost
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self, cost: float = 1.0) -> float:
        wait = self.reserve(cost)
        if wait > 0:
            self._sleep(wait)
        return wait


class RateTier(StrEnum):
    """Kalshi's usage tiers, as `GET /account/limits` names them (`usage_tier`)."""

    BASIC = "basic"
    ADVANCED = "advanced"
    PREMIER = "premier"
    PARAGON = "paragon"
    PRIME = "prime"
    PRESTIGE = "prestige"


@dataclass(frozen=True)
class TierLimit:
    """One tier's read bucket: tokens refilled per second and seconds of budget it holds."""

    read_tokens_per_s: int
    bucket_seconds: float

    @property
    def reads_per_s(self) -> float:
        return self.read_tokens_per_s / READ_COST_TOKENS

    @property
    def burst(self) -> float:
        """Requests the full bucket allows back to back."""
        return self.reads_per_s * self.bucket_seconds


# Advanced is not among the tiers Kalshi named when it raised the higher ones by 20% (Premier,
# Paragon, Prime, Prestige), so it keeps its documented 300 tokens/s: a limiter below the
# server's never costs a 429.
TIER_LIMITS: dict[RateTier, TierLimit] = {
    RateTier.BASIC: TierLimit(200, 3.0),
    RateTier.ADVANCED: TierLimit(300, 3.0),
    RateTier.PREMIER: TierLimit(1_200, 1.0),
    RateTier.PARAGON: TierLimit(2_400, 1.0),
    RateTier.PRIME: TierLimit(4_800, 1.0),
    RateTier.PRESTIGE: TierLimit(12_000, 1.0),
}


def parse_rate_tier(value: str | RateTier | None) -> RateTier:
    """A tier from its name, any case; empty means basic. Unknown names are refused."""
    if isinstance(value, RateTier):
        return value
    try:
        return RateTier((value or RateTier.BASIC.value).strip().lower())
    except ValueError:
        allowed = ", ".join(t.value for t in RateTier)
        raise KalshiConfigError(
            f"{RATE_TIER_VAR}={value!r} is not a Kalshi rate-limit tier: use one of {allowed} "
            "(the usage tier on your Kalshi account; basic when unsure)"
        ) from None


def read_limiter(
    tier: RateTier,
    *,
    requests_per_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> TokenBucket:
    """The client's limiter for `tier`, counted in requests; `requests_per_s` lowers or raises
    the rate and keeps the tier's seconds of budget."""
    limit = TIER_LIMITS[tier]
    rate = requests_per_s if requests_per_s is not None else limit.reads_per_s
    return TokenBucket(rate, rate * limit.bucket_seconds, clock=clock, sleep=sleep)

"""The REST limiter per rate-limit tier (since September 2026: Basic 20 reads/s, Basic and
Advanced buckets hold 3 s of budget), driven by a fake clock so time never decides a pass."""

from __future__ import annotations

import pytest

from kalshi_pipeline.kalshi.errors import KalshiConfigError
from kalshi_pipeline.kalshi.ratelimit import (
    TIER_LIMITS,
    RateTier,
    TokenBucket,
    parse_rate_tier,
    read_limiter,
)
from kalshi_pipeline.kalshi.rest import RestClient
from kalshi_pipeline.kalshi.settings import KalshiSettings


class FakeTime:
    """A monotonic clock that moves only when the limiter sleeps or the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# tier -> (requests per second, requests in a full bucket)
EXPECTED = {
    "basic": (20, 60),
    "advanced": (30, 90),
    "premier": (120, 120),
    "paragon": (240, 240),
    "prime": (480, 480),
    "prestige": (1200, 1200),
}


def test_every_tier_has_its_documented_rate_and_bucket() -> None:
    assert {t.value: (lim.reads_per_s, lim.burst) for t, lim in TIER_LIMITS.items()} == EXPECTED


@pytest.mark.parametrize("tier", list(RateTier), ids=str)
def test_the_limiter_of_a_tier_allows_its_burst_then_its_rate(tier: RateTier) -> None:
    rate, burst = EXPECTED[tier.value]
    t = FakeTime()
    limiter = read_limiter(tier, clock=t.clock, sleep=t.sleep)

    # a full bucket: `burst` requests go out back to back, without waiting
    assert [limiter.acquire() for _ in range(burst)] == [0.0] * burst
    assert t.now == 1_000.0
    # the next one waits for one request's worth of refill
    assert limiter.acquire() == pytest.approx(1 / rate)
    # from then on, ten seconds carry ten seconds of requests, and no more
    start = t.now
    for _ in range(10 * rate):
        limiter.acquire()
    assert t.now - start == pytest.approx(10.0)


@pytest.mark.parametrize("tier", list(RateTier), ids=str)
def test_an_idle_limiter_refills_to_its_burst_and_no_further(tier: RateTier) -> None:
    rate, burst = EXPECTED[tier.value]
    t = FakeTime()
    limiter = read_limiter(tier, clock=t.clock, sleep=t.sleep)
    for _ in range(burst):
        limiter.acquire()
    t.now += 60.0  # idle for a minute: the bucket holds its budget, not a minute of it
    assert sum(1 for _ in range(burst + rate) if limiter.try_acquire()) == burst


def test_an_explicit_rate_keeps_the_tiers_seconds_of_budget() -> None:
    t = FakeTime()
    limiter = read_limiter(RateTier.BASIC, requests_per_s=5, clock=t.clock, sleep=t.sleep)
    assert (limiter.rate, limiter.capacity) == (5.0, 15.0)


def test_the_rest_client_limiter_follows_the_settings_tier() -> None:
    for tier, (rate, burst) in EXPECTED.items():
        settings = KalshiSettings.for_env("local", rate_tier=tier)
        with RestClient(settings, sign=False) as client:
            assert (client.limiter.rate, client.limiter.capacity) == (rate, burst), tier
    basic = KalshiSettings.for_env("local")
    with RestClient(basic, sign=False, requests_per_s=100) as client:
        assert (client.limiter.rate, client.limiter.capacity) == (100.0, 300.0)
    with RestClient(basic, sign=False, requests_per_s=10, burst=2) as client:
        assert (client.limiter.rate, client.limiter.capacity) == (10.0, 2.0)


def test_kalshi_rate_tier_reaches_the_rest_client() -> None:
    settings = KalshiSettings.from_env({"KALSHI_RATE_TIER": "Prime"})
    with RestClient(settings, sign=False) as client:
        assert client.limiter.rate == 480.0


@pytest.mark.parametrize("value", ["", None, "basic", "BASIC", " advanced "])
def test_tier_names_are_read_in_any_case_and_empty_is_basic(value: str | None) -> None:
    expected = RateTier.ADVANCED if value and "advanced" in value else RateTier.BASIC
    assert parse_rate_tier(value) is expected


def test_an_unknown_tier_is_refused_naming_the_variable_and_the_allowed_values() -> None:
    with pytest.raises(KalshiConfigError) as caught:
        parse_rate_tier("platinum")
    message = str(caught.value)
    assert "KALSHI_RATE_TIER='platinum'" in message
    assert "basic, advanced, premier, paragon, prime, prestige" in message


def test_token_bucket_waits_on_the_clock_it_was_given() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate=2.0, capacity=1, clock=t.clock, sleep=t.sleep)
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.5)
    assert t.slept == [pytest.approx(0.5)]

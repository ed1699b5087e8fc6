"""The endpoints third-party clients call first: `/portfolio/balance` and `/account/limits`
(signed, as on Kalshi) and `/exchange/schedule` (public), in Kalshi's shapes."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from itertools import pairwise

import requests

from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.simulator.support import (
    MISSING_SIGNATURE,
    REST_PREFIX,
    TestSigner,
)

BALANCE = f"{REST_PREFIX}/portfolio/balance"
LIMITS = f"{REST_PREFIX}/account/limits"
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def signed_get(sim: SimulatorProcess, signer: TestSigner, path: str) -> requests.Response:
    url = sim.rest_url.removesuffix(REST_PREFIX) + path
    return requests.get(url, headers=signer.headers("GET", path), timeout=10)


def test_balance_has_kalshis_shape(sim: SimulatorProcess, signer: TestSigner) -> None:
    resp = signed_get(sim, signer, BALANCE)
    assert resp.status_code == 200
    body = resp.json()
    # Required by Kalshi's GetBalanceResponse: integer cents and a Unix time in seconds.
    for key in ("balance", "portfolio_value", "updated_ts"):
        assert isinstance(body[key], int) and not isinstance(body[key], bool), key
    assert 0 < body["updated_ts"] <= time.time() + 1
    assert Decimal(body["balance_dollars"]) * 100 == body["balance"]
    assert body["balance_breakdown"] == [{"balance": body["balance_dollars"], "exchange_index": 0}]


def test_account_endpoints_need_a_signature(sim: SimulatorProcess) -> None:
    for path in (BALANCE, LIMITS):
        resp = requests.get(sim.rest_url.removesuffix(REST_PREFIX) + path, timeout=10)
        assert resp.status_code == 401, path
        assert resp.json() == MISSING_SIGNATURE


def test_account_limits_report_the_bucket_that_is_enforced(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    basic = start_sim(rate=0)  # the default: Kalshi's Basic tier
    assert signed_get(basic, signer, LIMITS).json() == {
        "grants": [],
        "read": {"bucket_capacity": 600, "refill_rate": 200},
        "usage_tier": "basic",
        "write": {"bucket_capacity": 100, "refill_rate": 100},
    }
    slow = start_sim(rate=0, rest_tokens_per_s=10)
    limits = signed_get(slow, signer, LIMITS).json()
    assert limits["read"] == {"bucket_capacity": 30, "refill_rate": 10}
    assert limits["usage_tier"] == "custom"
    # 30 tokens at 10 a request: three unsigned requests (their own bucket) pass at once.
    url = f"{slow.rest_url}/exchange/status"
    statuses = [requests.get(url, timeout=10).status_code for _ in range(8)]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses


def test_exchange_schedule_is_public_with_the_thursday_maintenance(sim: SimulatorProcess) -> None:
    resp = requests.get(f"{sim.rest_url}/exchange/schedule", timeout=10)
    assert resp.status_code == 200
    schedule = resp.json()["schedule"]
    assert schedule["maintenance_windows"] == []
    (week,) = schedule["standard_hours"]
    assert {"start_time", "end_time", *DAYS} <= set(week)
    for day in DAYS:
        for session in week[day]:
            assert set(session) == {"open_time", "close_time"}
            assert session["open_time"] < session["close_time"]
    thursday = week["thursday"]
    gaps = [(a["close_time"], b["open_time"]) for a, b in pairwise(thursday)]
    assert gaps == [("03:00", "05:00")]

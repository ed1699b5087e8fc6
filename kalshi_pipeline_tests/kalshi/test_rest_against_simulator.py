"""`RestClient` against the simulator: pagination, limits, 429 and 5xx (§4.1, §4.7, §4.8)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from kalshi_pipeline.kalshi.errors import (
    KalshiAuthError,
    KalshiBadRequestError,
    KalshiConnectionError,
    KalshiNotFoundError,
    KalshiRateLimitError,
    KalshiServerError,
)
from kalshi_pipeline.kalshi.messages import decode_markets_page
from kalshi_pipeline.kalshi.rest import RestClient, RetryNotice, api_error
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.simulator.process import SimulatorProcess

pytestmark = pytest.mark.timeout(60)

LIMIT_OVER_MAX = (
    "Parameter validation failed for GetMarkets: Key: 'GetMarketsParams.Limit' "
    "Error:Field validation for 'Limit' failed on the 'lte' tag"
)
# the simulator's 5xx bodies come one per error-body shape; each must keep its code
CODE_OF_5XX = {500: "internal_server_error", 502: "bad_gateway", 503: None}


@pytest.fixture(scope="module")
def big_sim(kalshi_home: Path) -> Iterator[SimulatorProcess]:
    with SimulatorProcess(markets=3500, rate=5, seed=11, kalshi_home=kalshi_home) as sim:
        yield sim


def rest_requests(sim: SimulatorProcess) -> int:
    return int(sim.stats()["rest_requests"])


# --------------------------------------------------------------------------- pagination


def test_get_markets_returns_every_market_once_and_stops_at_the_empty_cursor(
    big_sim: SimulatorProcess,
) -> None:
    settings = KalshiSettings.for_env("local", rest_url=big_sim.rest_url, ws_url=big_sim.ws_url)
    total = big_sim.stats()["markets_total"]
    assert total >= 3500
    with RestClient(settings) as client:
        before = rest_requests(big_sim)
        pages = list(client.iter_markets_raw(limit=1000))
        sent = rest_requests(big_sim) - before
        markets = client.get_markets(limit=1000)

    decoded = [decode_markets_page(p.body) for p in pages]
    assert len(pages) >= 4
    assert sent == len(pages)  # nothing asked after the final page
    assert [bool(p.cursor) for p in decoded] == [True] * (len(pages) - 1) + [False]
    assert all(len(p.markets) == 1000 for p in decoded[:-1])
    tickers = [m.ticker for m in markets]
    assert len(tickers) == len(set(tickers)) == total
    assert tickers == [m.ticker for p in decoded for m in p.markets]


def test_limit_above_1000_is_refused_before_anything_is_sent(sim: SimulatorProcess) -> None:
    settings = KalshiSettings.for_env("local", rest_url=sim.rest_url, ws_url=sim.ws_url)
    with RestClient(settings) as client:
        before = rest_requests(sim)
        with pytest.raises(ValueError, match="1000"):
            RestClient.market_params(limit=1001)
        with pytest.raises(ValueError, match="limit=1001"):
            client.get_markets(limit=1001)
        assert rest_requests(sim) == before


def test_servers_400_for_limit_above_1000_becomes_a_bad_request_error(
    sim: SimulatorProcess,
) -> None:
    url = f"{sim.rest_url}/markets?limit=1001"
    response = requests.get(url, timeout=10)

    assert response.status_code == 400
    assert response.json() == {"msg": LIMIT_OVER_MAX}
    exc = api_error("GET", url, response.status_code, response.content)
    assert isinstance(exc, KalshiBadRequestError)
    assert exc.status == 400
    assert exc.code is None
    assert LIMIT_OVER_MAX in str(exc)


def test_unknown_market_is_a_not_found_error(settings: KalshiSettings) -> None:
    with RestClient(settings) as client, pytest.raises(KalshiNotFoundError) as caught:
        client.get_market("NO-SUCH-MARKET")
    assert caught.value.code == "not_found"
    assert "not found" in str(caught.value)


def test_open_filter_returns_active_markets(settings: KalshiSettings) -> None:
    with RestClient(settings) as client:
        markets = client.get_markets(status="open")
        assert markets
        assert {m.status for m in markets} == {"active"}
        some = [m.ticker for m in markets[:3]]
        assert sorted(m.ticker for m in client.get_markets(tickers=some)) == sorted(some)


def test_get_events_returns_every_event_once_with_nested_markets(
    big_sim: SimulatorProcess,
) -> None:
    settings = KalshiSettings.for_env("local", rest_url=big_sim.rest_url, ws_url=big_sim.ws_url)
    with RestClient(settings) as client:
        events = client.get_events(with_nested_markets=True)
    tickers = [e.event_ticker for e in events]
    assert len(tickers) == len(set(tickers)) == big_sim.stats()["events_total"]
    assert len(tickers) > 200  # more than one page
    nested = [m for e in events for m in e.markets or []]
    assert len(nested) == big_sim.stats()["markets_total"]


def test_unsigned_client_reads_public_data_but_not_the_portfolio(
    settings: KalshiSettings,
) -> None:
    with RestClient(settings, sign=False) as client:
        assert client.get_exchange_status().trading_active
        with pytest.raises(KalshiAuthError) as caught:
            client.get_raw("/portfolio/balance")
    assert caught.value.reason == "missing_signature"


def test_unreachable_server_raises_connection_error_after_the_retries() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = KalshiSettings.for_env("local", rest_url=f"http://127.0.0.1:{port}/trade-api/v2")
    notices: list[RetryNotice] = []
    client = RestClient(
        settings, sign=False, max_retries=2, backoff_base_s=0.01, on_retry=notices.append
    )
    with client, pytest.raises(KalshiConnectionError) as caught:
        client.get_exchange_status()
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "3 attempts" in str(caught.value)
    assert [n.status for n in notices] == [None, None]


def test_slow_answer_past_the_read_timeout_raises_connection_error(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    client = RestClient(settings, read_timeout_s=0.3, max_retries=1, backoff_base_s=0.01)
    with client:
        sim.set_faults(slow_ms=3000)
        with pytest.raises(KalshiConnectionError) as caught:
            client.get_exchange_status()
    assert "Timeout" in str(caught.value)
    assert "/exchange/status" in str(caught.value)


# --------------------------------------------------------------------------- 429


def test_a_429_spell_is_retried_until_the_call_succeeds(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    notices: list[RetryNotice] = []
    # 12 retries (not 8) so that the jittered backoff outlasts the 1.5 s spell with certainty
    client = RestClient(
        settings, max_retries=12, backoff_base_s=0.1, backoff_cap_s=1.0, on_retry=notices.append
    )
    with client:
        sim.set_faults(http_429_s=1.5)
        status = client.get_exchange_status()

    assert status.exchange_active
    assert notices, "on_retry was never told about the 429s"
    assert all(n.status == 429 for n in notices)
    assert [n.attempt for n in notices] == list(range(1, len(notices) + 1))
    assert all(n.path == "/exchange/status" for n in notices)
    assert all(0 <= n.delay_s <= 1.0 for n in notices)


def test_a_429_with_no_retries_left_raises_rate_limit_error(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    with RestClient(settings, max_retries=0) as client:
        sim.set_faults(http_429_s=30)
        with pytest.raises(KalshiRateLimitError) as caught:
            client.get_exchange_status()
    assert caught.value.status == 429
    assert caught.value.body == b'{"error": "too many requests"}'
    assert "too many requests" in str(caught.value)


def test_a_429_storm_longer_than_the_retry_budget_raises_rate_limit_error(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    notices: list[RetryNotice] = []
    client = RestClient(
        settings, max_retries=3, backoff_base_s=0.01, backoff_cap_s=0.05, on_retry=notices.append
    )
    with client:
        sim.set_faults(http_429_s=30)
        with pytest.raises(KalshiRateLimitError):
            client.get_markets(limit=10)
    assert [n.status for n in notices] == [429, 429, 429]


# --------------------------------------------------------------------------- 5xx


def test_a_5xx_spell_is_retried_until_the_call_succeeds(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    notices: list[RetryNotice] = []
    client = RestClient(
        settings, max_retries=12, backoff_base_s=0.1, backoff_cap_s=1.0, on_retry=notices.append
    )
    with client:
        ticker = next(client.iter_market_pages(limit=1, status="open")).markets[0].ticker
        sim.set_faults(http_5xx_s=1.0)
        market = client.get_market(ticker)

    assert market.ticker == ticker
    assert notices
    assert {n.status for n in notices} <= {500, 502, 503}
    assert all(n.error == f"HTTP {n.status}" for n in notices)


def test_a_5xx_storm_longer_than_the_budget_raises_server_error_with_the_bodys_code(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    # two attempts a call while the simulator cycles 500, 502, 503: three calls end on each of
    # them once, so every error-body shape is met
    client = RestClient(settings, max_retries=1, backoff_base_s=0.01, backoff_cap_s=0.05)
    with client:
        sim.set_faults(http_5xx_s=30)
        errors = []
        for _ in range(3):
            with pytest.raises(KalshiServerError) as caught:
                client.get_exchange_status()
            errors.append(caught.value)

    for exc in errors:
        assert exc.status in CODE_OF_5XX
        assert exc.code == CODE_OF_5XX[exc.status]
        assert f"HTTP {exc.status}" in str(exc)
        if exc.code:
            assert exc.code in str(exc)
        assert "kept failing" in str(exc)
    assert {e.status for e in errors} == {500, 502, 503}

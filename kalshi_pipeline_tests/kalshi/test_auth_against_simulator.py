"""Signed REST calls and WebSocket handshakes against the simulator, good and bad (§2.5, §2.7).

Each way of getting authentication wrong must come back as the typed error with the cause a
user can act on (`reason`) and the server's exact 401 body.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from kalshi_pipeline.kalshi.auth import HEADER_SIGNATURE, Signer
from kalshi_pipeline.kalshi.devkey import DevKey
from kalshi_pipeline.kalshi.errors import (
    KalshiAuthError,
    WebSocketAuthError,
    WebSocketHandshakeError,
)
from kalshi_pipeline.kalshi.messages import Subscribed
from kalshi_pipeline.kalshi.rest import RestClient, api_error
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.kalshi.websocket import KalshiWebSocket
from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.kalshi.support import (
    HeaderDroppingSigner,
    QueryStringSigner,
    ShiftedClockSigner,
    run,
)

# 401 bodies of kalshi-protocol.md §2.7, as Kalshi's demo service sent them
BAD_SIGNATURE = (
    b'{"error":{"code":"authentication_error","message":"authentication_error",'
    b'"details":"INCORRECT_API_KEY_SIGNATURE"}}'
)
UNKNOWN_KEY = (
    b'{"error":{"code":"authentication_error","message":"authentication_error",'
    b'"details":"NOT_FOUND"}}'
)
MISSING_SIGNATURE = (
    b'{"error":{"code":"signature_is_missing_from_headers",'
    b'"message":"signature is missing from headers"}}'
)
TIMESTAMP_EXPIRED = (
    b'{"error":{"code":"header_timestamp_expired","message":"header timestamp expired"}}'
)
FIVE_MINUTES_MS = 5 * 60 * 1000

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def dev_signer(settings: KalshiSettings) -> Signer:
    return settings.signer()


def balance_through_client(settings: KalshiSettings, signer: object) -> KalshiAuthError:
    client = RestClient(settings, signer=signer, max_retries=0)  # type: ignore[arg-type]
    with client, pytest.raises(KalshiAuthError) as caught:
        client.get_raw("/portfolio/balance")
    return caught.value


def handshake_through_client(settings: KalshiSettings, signer: object) -> WebSocketAuthError:
    async def attempt() -> WebSocketAuthError:
        ws = KalshiWebSocket(settings.ws_url, signer)  # type: ignore[arg-type]
        with pytest.raises(WebSocketAuthError) as caught:
            await ws.connect()
        return caught.value

    return run(attempt())


def handshake_raw(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """A handshake with exactly these headers, through `websockets` itself."""

    async def attempt() -> tuple[int, bytes]:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(url, additional_headers=headers, open_timeout=10):
                pass
        response = caught.value.response
        return response.status_code, response.body or b""

    return run(attempt())


def assert_rest_refusal(exc: KalshiAuthError, reason: str, body: bytes) -> None:
    assert exc.status == 401
    assert exc.reason == reason
    assert exc.body == body
    assert KalshiAuthError.HINTS[reason] in str(exc)


def assert_ws_refusal(exc: WebSocketAuthError, reason: str, body: bytes) -> None:
    assert exc.status == 401
    assert exc.reason == reason
    assert exc.body == body
    assert KalshiAuthError.HINTS[reason] in str(exc)


# --------------------------------------------------------------------------- accepted


def test_signed_rest_calls_with_the_dev_key_are_accepted(settings: KalshiSettings) -> None:
    with RestClient(settings) as client:
        status = client.get_exchange_status()
        assert (status.exchange_active, status.trading_active) == (True, True)
        ticker = next(client.iter_market_pages(limit=5, status="open")).markets[0].ticker
        market = client.get_market(ticker)
        assert market.ticker == ticker
        assert market.status == "active"
        balance = client.get_raw("/portfolio/balance")
        assert balance.status == 200
        assert b"balance_dollars" in balance.body


def test_websocket_handshake_with_the_dev_key_is_accepted(
    settings: KalshiSettings, sim: SimulatorProcess, dev_key: DevKey
) -> None:
    before = len(sim.sessions())

    async def session() -> list[object]:
        async with KalshiWebSocket(settings.ws_url, settings.signer()) as ws:
            return list(await ws.subscribe(["ticker"]))

    assert run(session()) == [Subscribed(cmd_id=1, channel="ticker", sid=1)]
    opened = sim.sessions()[before:]
    assert [s["key_id"] for s in opened] == [dev_key.key_id]


# --------------------------------------------------------------------------- another key, same id


def test_rest_call_signed_by_another_key_under_the_dev_key_id_is_a_bad_signature(
    settings: KalshiSettings, dev_key: DevKey, stranger_key: rsa.RSAPrivateKey
) -> None:
    exc = balance_through_client(settings, Signer(dev_key.key_id, stranger_key))
    assert_rest_refusal(exc, "bad_signature", BAD_SIGNATURE)
    assert exc.details == "INCORRECT_API_KEY_SIGNATURE"


def test_handshake_signed_by_another_key_under_the_dev_key_id_is_a_bad_signature(
    settings: KalshiSettings, dev_key: DevKey, stranger_key: rsa.RSAPrivateKey
) -> None:
    exc = handshake_through_client(settings, Signer(dev_key.key_id, stranger_key))
    assert_ws_refusal(exc, "bad_signature", BAD_SIGNATURE)


# --------------------------------------------------------------------------- unknown key id


def test_rest_call_with_an_unknown_key_id_is_refused_as_unknown_key(
    settings: KalshiSettings, stranger_key: rsa.RSAPrivateKey
) -> None:
    exc = balance_through_client(settings, Signer(str(uuid.uuid4()), stranger_key))
    assert_rest_refusal(exc, "unknown_key", UNKNOWN_KEY)


def test_handshake_with_an_unknown_key_id_is_refused_as_unknown_key(
    settings: KalshiSettings, stranger_key: rsa.RSAPrivateKey
) -> None:
    exc = handshake_through_client(settings, Signer(str(uuid.uuid4()), stranger_key))
    assert_ws_refusal(exc, "unknown_key", UNKNOWN_KEY)


# --------------------------------------------------------------------------- clock skew


@pytest.mark.parametrize("offset_ms", [-FIVE_MINUTES_MS, FIVE_MINUTES_MS], ids=["past", "future"])
def test_rest_call_signed_five_minutes_off_is_refused_as_clock_skew(
    settings: KalshiSettings, dev_signer: Signer, offset_ms: int
) -> None:
    exc = balance_through_client(settings, ShiftedClockSigner(dev_signer, offset_ms))
    assert_rest_refusal(exc, "clock_skew", TIMESTAMP_EXPIRED)


@pytest.mark.parametrize("offset_ms", [-FIVE_MINUTES_MS, FIVE_MINUTES_MS], ids=["past", "future"])
def test_raw_rest_request_signed_five_minutes_off_gets_timestamp_expired(
    settings: KalshiSettings, dev_signer: Signer, offset_ms: int
) -> None:
    url = f"{settings.rest_url}/portfolio/balance"
    headers = dev_signer.headers("GET", url, now_ms=time.time_ns() // 1_000_000 + offset_ms)
    response = requests.get(url, headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.content == TIMESTAMP_EXPIRED
    exc = api_error("GET", url, 401, response.content)
    assert isinstance(exc, KalshiAuthError)
    assert exc.reason == "clock_skew"


@pytest.mark.parametrize("offset_ms", [-FIVE_MINUTES_MS, FIVE_MINUTES_MS], ids=["past", "future"])
def test_handshake_signed_five_minutes_off_is_refused_as_clock_skew(
    settings: KalshiSettings, dev_signer: Signer, offset_ms: int
) -> None:
    exc = handshake_through_client(settings, ShiftedClockSigner(dev_signer, offset_ms))
    assert_ws_refusal(exc, "clock_skew", TIMESTAMP_EXPIRED)
    status, body = handshake_raw(
        settings.ws_url,
        dev_signer.headers("GET", settings.ws_url, now_ms=time.time_ns() // 1_000_000 + offset_ms),
    )
    assert (status, body) == (401, TIMESTAMP_EXPIRED)


def test_a_clock_a_few_seconds_off_is_still_accepted(
    settings: KalshiSettings, dev_signer: Signer
) -> None:
    for offset_ms in (-3_000, 3_000):
        with RestClient(settings, signer=ShiftedClockSigner(dev_signer, offset_ms)) as client:  # type: ignore[arg-type]
            assert client.get_raw("/portfolio/balance").status == 200


# --------------------------------------------------------------------------- missing signature


def test_rest_call_without_the_signature_header_is_refused_as_missing_signature(
    settings: KalshiSettings, dev_signer: Signer
) -> None:
    exc = balance_through_client(settings, HeaderDroppingSigner(dev_signer, HEADER_SIGNATURE))
    assert_rest_refusal(exc, "missing_signature", MISSING_SIGNATURE)


def test_handshake_without_the_signature_header_is_refused_as_missing_signature(
    settings: KalshiSettings, dev_signer: Signer
) -> None:
    exc = handshake_through_client(settings, HeaderDroppingSigner(dev_signer, HEADER_SIGNATURE))
    assert_ws_refusal(exc, "missing_signature", MISSING_SIGNATURE)


def test_handshake_without_any_auth_headers_is_refused(settings: KalshiSettings) -> None:
    status, body = handshake_raw(settings.ws_url, {})
    assert (status, body) == (401, MISSING_SIGNATURE)


# --------------------------------------------------------------------------- query string signed


def test_signature_over_query_string_is_rejected_with_incorrect_signature(
    settings: KalshiSettings, dev_signer: Signer
) -> None:
    url = f"{settings.rest_url}/portfolio/balance?subaccount=0"
    headers = QueryStringSigner(dev_signer).headers("GET", url)
    response = requests.get(url, headers=headers, timeout=10)

    assert response.status_code == 401
    assert response.content == BAD_SIGNATURE
    exc = api_error("GET", url, response.status_code, response.content)
    assert isinstance(exc, KalshiAuthError)
    assert exc.reason == "bad_signature"
    assert "no query string" in str(exc)
    # the same request signed the way the client signs it is accepted
    good = requests.get(url, headers=dev_signer.headers("GET", url), timeout=10)
    assert good.status_code == 200


def test_handshake_with_the_query_string_signed_is_rejected_with_incorrect_signature(
    settings: KalshiSettings, dev_signer: Signer
) -> None:
    url = f"{settings.ws_url}?client=test"
    exc = handshake_through_client(
        KalshiSettings.for_env("local", rest_url=settings.rest_url, ws_url=url),
        QueryStringSigner(dev_signer),
    )
    assert_ws_refusal(exc, "bad_signature", BAD_SIGNATURE)


def test_signature_over_a_relative_path_is_rejected_with_incorrect_signature(
    settings: KalshiSettings, dev_signer: Signer
) -> None:
    url = f"{settings.rest_url}/portfolio/balance"
    headers = dev_signer.headers("GET", "/portfolio/balance")  # without /trade-api/v2
    response = requests.get(url, headers=headers, timeout=10)
    assert (response.status_code, response.content) == (401, BAD_SIGNATURE)


# --------------------------------------------------------------------------- not about credentials


def test_refused_handshake_is_a_handshake_error_not_an_auth_error(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    sim.set_faults(refuse_handshakes_s=30)

    async def attempt() -> WebSocketHandshakeError:
        ws = KalshiWebSocket(settings.ws_url, settings.signer())
        with pytest.raises(WebSocketHandshakeError) as caught:
            await ws.connect()
        return caught.value

    exc = run(attempt())
    assert not isinstance(exc, WebSocketAuthError)
    assert exc.status == 503
    assert b"service_unavailable" in exc.body
    assert "503" in str(exc)


def test_handshake_to_a_port_nobody_listens_on_is_a_handshake_error(
    settings: KalshiSettings,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def attempt() -> WebSocketHandshakeError:
        url = f"ws://127.0.0.1:{port}/trade-api/ws/v2"
        ws = KalshiWebSocket(url, settings.signer(), open_timeout_s=5)
        with pytest.raises(WebSocketHandshakeError) as caught:
            await ws.connect()
        return caught.value

    exc = run(attempt())
    assert exc.status is None
    assert f"127.0.0.1:{port}" in str(exc)

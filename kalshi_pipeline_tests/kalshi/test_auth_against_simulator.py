"""Signed REST calls and WebSocket handshakes against the simulator, good and bad (§2.5, §2.7),
with Ed25519 and RSA keys alike (each test taking `api_key` runs once per key type).

Each way of getting authentication wrong must come back as the typed error with the cause a
user can act on (`reason`), the key id and key file to check, and the server's exact 401 body.
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest
import requests
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from kalshi_pipeline.kalshi.auth import HEADER_SIGNATURE, KeyType, Signer
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
    ApiKey,
    HeaderDroppingSigner,
    QueryStringSigner,
    ShiftedClockSigner,
    run,
)
from kalshi_pipeline_tests.keys import KEY_TYPES, new_private_key, pem_of, write_key

# 401 bodies as Kalshi's demo service sent them
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
def signer(signed_settings: KalshiSettings) -> Signer:
    """A registered key's signer, loaded from its file; once per key type."""
    return signed_settings.signer()


def signer_from_file(folder: Path, key_id: str, key_type: str) -> Signer:
    """A signer for `key_id` whose key (a fresh one of `key_type`) is not the registered one."""
    path = write_key(folder / f"wrong-{key_type}.pem", pem_of(new_private_key(key_type)))
    return Signer.from_file(key_id, path)


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
    assert_hint(str(exc), reason)


def assert_ws_refusal(exc: WebSocketAuthError, reason: str, body: bytes) -> None:
    assert exc.status == 401
    assert exc.reason == reason
    assert exc.body == body
    assert_hint(str(exc), reason)


def assert_hint(message: str, reason: str) -> None:
    if reason not in ("bad_signature", "unknown_key"):  # those name the key: asserted per test
        assert KalshiAuthError.HINTS[reason] in message


def assert_names_the_key(message: str, signer: Signer, fix: str) -> None:
    """The message names the key id and the key file that signed, and the fix."""
    assert signer.key_id in message
    assert str(signer.key_file) in message
    assert fix in message


# --------------------------------------------------------------------------- accepted


def test_signed_rest_calls_with_the_dev_key_are_accepted(settings: KalshiSettings) -> None:
    with RestClient(settings) as client:
        status = client.get_exchange_status()
        assert (status.exchange_active, status.trading_active) == (True, True)
        assert status.exchange_index_statuses, "the simulator lists every shard's state"
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


# --------------------------------------------------------------------------- either key type


def test_local_with_kalshi_dev_key_type_rsa_signs_rest_and_handshake_with_an_rsa_dev_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the variable reaches both sides: the simulator makes the RSA dev key, the client uses it
    home = tmp_path / "home"
    monkeypatch.setenv("KALSHI_HOME", str(home))
    monkeypatch.setenv("KALSHI_DEV_KEY_TYPE", "rsa")
    with SimulatorProcess(markets=20, rate=0, seed=3, kalshi_home=home) as sim:
        settings = KalshiSettings.for_env("local", rest_url=sim.rest_url, ws_url=sim.ws_url)
        signer = settings.signer()
        assert signer.key_type is KeyType.RSA
        with RestClient(settings) as client:
            assert client.get_raw("/portfolio/balance").status == 200

        async def session() -> list[object]:
            async with KalshiWebSocket(settings.ws_url, signer) as ws:
                return list(await ws.subscribe(["ticker"]))

        assert run(session()) == [Subscribed(cmd_id=1, channel="ticker", sid=1)]
        assert [s["key_id"] for s in sim.sessions()] == [signer.key_id]


def test_signed_rest_calls_with_either_key_type_are_accepted(
    signed_settings: KalshiSettings, api_key: ApiKey
) -> None:
    signer = signed_settings.signer()
    assert signer.key_type.value == api_key.key_type
    with RestClient(signed_settings) as client:
        balance = client.get_raw("/portfolio/balance")
        assert balance.status == 200
        assert b"balance_dollars" in balance.body


def test_websocket_handshake_with_either_key_type_is_accepted(
    signed_settings: KalshiSettings, sim: SimulatorProcess, api_key: ApiKey
) -> None:
    before = len(sim.sessions())

    async def session() -> list[object]:
        async with KalshiWebSocket(signed_settings.ws_url, signed_settings.signer()) as ws:
            return list(await ws.subscribe(["ticker"]))

    assert run(session()) == [Subscribed(cmd_id=1, channel="ticker", sid=1)]
    assert [s["key_id"] for s in sim.sessions()[before:]] == [api_key.key_id]


# --------------------------------------------------------------------------- another key, same id

# (registered type, signing type): same type is a wrong key file; crossed types is an RSA key
# used under an Ed25519 key's id (or the reverse). Kalshi answers INCORRECT_API_KEY_SIGNATURE.
WRONG_KEY_CASES = [(registered, signing) for registered in KEY_TYPES for signing in KEY_TYPES]
WRONG_KEY_IDS = [f"registered-{r}-signed-{s}" for r, s in WRONG_KEY_CASES]


@pytest.mark.parametrize(("registered", "signing"), WRONG_KEY_CASES, ids=WRONG_KEY_IDS)
def test_rest_call_signed_by_another_key_under_a_registered_id_is_a_bad_signature(
    settings: KalshiSettings,
    api_keys: dict[str, ApiKey],
    tmp_path: Path,
    registered: str,
    signing: str,
) -> None:
    signer = signer_from_file(tmp_path, api_keys[registered].key_id, signing)
    exc = balance_through_client(settings, signer)
    assert_rest_refusal(exc, "bad_signature", BAD_SIGNATURE)
    assert exc.details == "INCORRECT_API_KEY_SIGNATURE"
    assert_names_the_key(str(exc), signer, "set KALSHI_PRIVATE_KEY_PATH")


@pytest.mark.parametrize(("registered", "signing"), WRONG_KEY_CASES, ids=WRONG_KEY_IDS)
def test_handshake_signed_by_another_key_under_a_registered_id_is_a_bad_signature(
    settings: KalshiSettings,
    api_keys: dict[str, ApiKey],
    tmp_path: Path,
    registered: str,
    signing: str,
) -> None:
    signer = signer_from_file(tmp_path, api_keys[registered].key_id, signing)
    exc = handshake_through_client(settings, signer)
    assert_ws_refusal(exc, "bad_signature", BAD_SIGNATURE)
    assert_names_the_key(str(exc), signer, "set KALSHI_PRIVATE_KEY_PATH")


def test_the_dev_key_signed_by_a_stranger_is_a_bad_signature(
    settings: KalshiSettings, dev_key: DevKey, tmp_path: Path
) -> None:
    signer = signer_from_file(tmp_path, dev_key.key_id, "ed25519")
    exc = balance_through_client(settings, signer)
    assert_rest_refusal(exc, "bad_signature", BAD_SIGNATURE)


# --------------------------------------------------------------------------- unknown key id


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_rest_call_with_an_unknown_key_id_is_refused_as_unknown_key(
    settings: KalshiSettings, tmp_path: Path, key_type: str
) -> None:
    signer = signer_from_file(tmp_path, str(uuid.uuid4()), key_type)
    exc = balance_through_client(settings, signer)
    assert_rest_refusal(exc, "unknown_key", UNKNOWN_KEY)
    assert_names_the_key(str(exc), signer, "set KALSHI_API_KEY_ID")


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_handshake_with_an_unknown_key_id_is_refused_as_unknown_key(
    settings: KalshiSettings, tmp_path: Path, key_type: str
) -> None:
    signer = signer_from_file(tmp_path, str(uuid.uuid4()), key_type)
    exc = handshake_through_client(settings, signer)
    assert_ws_refusal(exc, "unknown_key", UNKNOWN_KEY)
    assert_names_the_key(str(exc), signer, "set KALSHI_API_KEY_ID")


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_a_registered_key_under_a_mistyped_id_is_refused_as_unknown_key(
    settings: KalshiSettings, api_keys: dict[str, ApiKey], key_type: str
) -> None:
    # the right key file, the key id with one character off
    key = api_keys[key_type]
    wrong_id = key.key_id[:-1] + ("0" if key.key_id[-1] != "0" else "1")
    signer = Signer.from_file(wrong_id, key.path)
    exc = balance_through_client(settings, signer)
    assert_rest_refusal(exc, "unknown_key", UNKNOWN_KEY)
    assert_names_the_key(str(exc), signer, "set KALSHI_API_KEY_ID")


# --------------------------------------------------------------------------- clock skew


@pytest.mark.parametrize("offset_ms", [-FIVE_MINUTES_MS, FIVE_MINUTES_MS], ids=["past", "future"])
def test_rest_call_signed_five_minutes_off_is_refused_as_clock_skew(
    settings: KalshiSettings, signer: Signer, offset_ms: int
) -> None:
    exc = balance_through_client(settings, ShiftedClockSigner(signer, offset_ms))
    assert_rest_refusal(exc, "clock_skew", TIMESTAMP_EXPIRED)


@pytest.mark.parametrize("offset_ms", [-FIVE_MINUTES_MS, FIVE_MINUTES_MS], ids=["past", "future"])
def test_raw_rest_request_signed_five_minutes_off_gets_timestamp_expired(
    settings: KalshiSettings, signer: Signer, offset_ms: int
) -> None:
    url = f"{settings.rest_url}/portfolio/balance"
    headers = signer.headers("GET", url, now_ms=time.time_ns() // 1_000_000 + offset_ms)
    response = requests.get(url, headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.content == TIMESTAMP_EXPIRED
    exc = api_error("GET", url, 401, response.content)
    assert isinstance(exc, KalshiAuthError)
    assert exc.reason == "clock_skew"


@pytest.mark.parametrize("offset_ms", [-FIVE_MINUTES_MS, FIVE_MINUTES_MS], ids=["past", "future"])
def test_handshake_signed_five_minutes_off_is_refused_as_clock_skew(
    settings: KalshiSettings, signer: Signer, offset_ms: int
) -> None:
    exc = handshake_through_client(settings, ShiftedClockSigner(signer, offset_ms))
    assert_ws_refusal(exc, "clock_skew", TIMESTAMP_EXPIRED)
    status, body = handshake_raw(
        settings.ws_url,
        signer.headers("GET", settings.ws_url, now_ms=time.time_ns() // 1_000_000 + offset_ms),
    )
    assert (status, body) == (401, TIMESTAMP_EXPIRED)


def test_a_clock_a_few_seconds_off_is_still_accepted(
    settings: KalshiSettings, signer: Signer
) -> None:
    for offset_ms in (-3_000, 3_000):
        with RestClient(settings, signer=ShiftedClockSigner(signer, offset_ms)) as client:  # type: ignore[arg-type]
            assert client.get_raw("/portfolio/balance").status == 200


# --------------------------------------------------------------------------- missing signature


def test_rest_call_without_the_signature_header_is_refused_as_missing_signature(
    settings: KalshiSettings, signer: Signer
) -> None:
    exc = balance_through_client(settings, HeaderDroppingSigner(signer, HEADER_SIGNATURE))
    assert_rest_refusal(exc, "missing_signature", MISSING_SIGNATURE)


def test_handshake_without_the_signature_header_is_refused_as_missing_signature(
    settings: KalshiSettings, signer: Signer
) -> None:
    exc = handshake_through_client(settings, HeaderDroppingSigner(signer, HEADER_SIGNATURE))
    assert_ws_refusal(exc, "missing_signature", MISSING_SIGNATURE)


def test_handshake_without_any_auth_headers_is_refused(settings: KalshiSettings) -> None:
    status, body = handshake_raw(settings.ws_url, {})
    assert (status, body) == (401, MISSING_SIGNATURE)


# --------------------------------------------------------------------------- query string signed


def test_signature_over_query_string_is_rejected_with_incorrect_signature(
    settings: KalshiSettings, signer: Signer
) -> None:
    url = f"{settings.rest_url}/portfolio/balance?subaccount=0"
    headers = QueryStringSigner(signer).headers("GET", url)
    response = requests.get(url, headers=headers, timeout=10)

    assert response.status_code == 401
    assert response.content == BAD_SIGNATURE
    exc = api_error("GET", url, response.status_code, response.content)
    assert isinstance(exc, KalshiAuthError)
    assert exc.reason == "bad_signature"
    assert "no query string" in str(exc)
    # the same request signed the way the client signs it is accepted
    good = requests.get(url, headers=signer.headers("GET", url), timeout=10)
    assert good.status_code == 200


def test_handshake_with_the_query_string_signed_is_rejected_with_incorrect_signature(
    settings: KalshiSettings, signer: Signer
) -> None:
    url = f"{settings.ws_url}?client=test"
    exc = handshake_through_client(
        KalshiSettings.for_env("local", rest_url=settings.rest_url, ws_url=url),
        QueryStringSigner(signer),
    )
    assert_ws_refusal(exc, "bad_signature", BAD_SIGNATURE)


def test_signature_over_a_relative_path_is_rejected_with_incorrect_signature(
    settings: KalshiSettings, signer: Signer
) -> None:
    url = f"{settings.rest_url}/portfolio/balance"
    headers = signer.headers("GET", "/portfolio/balance")  # without /trade-api/v2
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

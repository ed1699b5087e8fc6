"""Signatures on REST and on the WebSocket handshake, with Kalshi's exact 401 bodies (§2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from kalshi_pipeline.kalshi.auth import HEADER_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP
from kalshi_pipeline.kalshi.devkey import generate_private_key_pem
from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.simulator.support import (
    BAD_SIGNATURE,
    MISSING_SIGNATURE,
    REST_PREFIX,
    TIMESTAMP_EXPIRED,
    UNKNOWN_KEY,
    WS_PATH,
    TestSigner,
    command,
    ws_connect,
)

BALANCE = f"{REST_PREFIX}/portfolio/balance"
MARKETS = f"{REST_PREFIX}/markets"


def _other_key(key_id: str) -> TestSigner:
    key = serialization.load_pem_private_key(generate_private_key_pem(), None)
    return TestSigner(key_id, key)  # type: ignore[arg-type]


def _wrong_key(signer: TestSigner, method: str, path: str) -> dict[str, str]:
    return _other_key(signer.key_id).headers(method, path)


def _unknown_key(signer: TestSigner, method: str, path: str) -> dict[str, str]:
    return _other_key("00000000-0000-0000-0000-000000000000").headers(method, path)


def _missing_signature(signer: TestSigner, method: str, path: str) -> dict[str, str]:
    headers = signer.headers(method, path)
    del headers[HEADER_SIGNATURE]
    return headers


def _past(signer: TestSigner, method: str, path: str) -> dict[str, str]:
    return signer.headers(method, path, skew_ms=-30_000)


def _future(signer: TestSigner, method: str, path: str) -> dict[str, str]:
    return signer.headers(method, path, skew_ms=5 * 60_000)


def _query_signed(signer: TestSigner, method: str, path: str) -> dict[str, str]:
    return signer.headers(method, path, signed_path=f"{path}?limit=5")


def _relative_path(signer: TestSigner, method: str, path: str) -> dict[str, str]:
    return signer.headers(method, path, signed_path=path.removeprefix("/trade-api"))


def _seconds_timestamp(signer: TestSigner, method: str, path: str) -> dict[str, str]:
    headers = signer.headers(method, path)
    headers[HEADER_TIMESTAMP] = headers[HEADER_TIMESTAMP][:-3]
    return headers


BAD_AUTH: list[tuple[str, Callable[[TestSigner, str, str], dict[str, str]], dict[str, Any]]] = [
    ("wrong private key", _wrong_key, BAD_SIGNATURE),
    ("unknown key id", _unknown_key, UNKNOWN_KEY),
    ("signature header missing", _missing_signature, MISSING_SIGNATURE),
    ("timestamp 30 s in the past", _past, TIMESTAMP_EXPIRED),
    ("timestamp 5 min in the future", _future, TIMESTAMP_EXPIRED),
    ("timestamp in seconds", _seconds_timestamp, TIMESTAMP_EXPIRED),
    ("query string signed", _query_signed, BAD_SIGNATURE),
    ("relative path signed", _relative_path, BAD_SIGNATURE),
]
IDS = [case[0] for case in BAD_AUTH]


def test_public_market_data_needs_no_signature(sim: SimulatorProcess) -> None:
    for path in ("/markets?limit=2", "/events?limit=2", "/series", "/exchange/status"):
        resp = requests.get(f"{sim.rest_url}{path}", timeout=10)
        assert resp.status_code == 200, (path, resp.text)


def test_signed_requests_are_accepted(sim: SimulatorProcess, signer: TestSigner) -> None:
    resp = requests.get(f"{sim.base_url}{BALANCE}", headers=signer.headers("GET", BALANCE))
    assert resp.status_code == 200, resp.text
    assert resp.json()["balance_dollars"] == "1000.0000"
    # The query string is not part of what is signed.
    resp = requests.get(
        f"{sim.base_url}{MARKETS}?limit=3", headers=signer.headers("GET", MARKETS), timeout=10
    )
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["markets"]) == 3


def test_clock_skew_inside_the_window_is_accepted(
    sim: SimulatorProcess, signer: TestSigner
) -> None:
    for skew_ms in (-5_000, 30_000):
        headers = signer.headers("GET", BALANCE, skew_ms=skew_ms)
        resp = requests.get(f"{sim.base_url}{BALANCE}", headers=headers, timeout=10)
        assert resp.status_code == 200, (skew_ms, resp.text)


def test_registered_extra_key_is_accepted(
    sim: SimulatorProcess, extra_key: tuple[TestSigner, Path]
) -> None:
    other, _ = extra_key
    resp = requests.get(f"{sim.base_url}{BALANCE}", headers=other.headers("GET", BALANCE))
    assert resp.status_code == 200, resp.text


def test_authenticated_endpoint_refuses_unsigned_requests(sim: SimulatorProcess) -> None:
    resp = requests.get(f"{sim.base_url}{BALANCE}", timeout=10)
    assert resp.status_code == 401
    assert resp.json() == MISSING_SIGNATURE


@pytest.mark.parametrize(("case", "make", "body"), BAD_AUTH, ids=IDS)
@pytest.mark.parametrize("path", [BALANCE, MARKETS], ids=["auth-endpoint", "public-endpoint"])
def test_bad_rest_auth_gets_the_exact_401(
    sim: SimulatorProcess,
    signer: TestSigner,
    case: str,
    make: Callable[[TestSigner, str, str], dict[str, str]],
    body: dict[str, Any],
    path: str,
) -> None:
    resp = requests.get(f"{sim.base_url}{path}", headers=make(signer, "GET", path), timeout=10)
    assert resp.status_code == 401, (case, resp.text)
    assert resp.json() == body, case
    assert "Retry-After" not in resp.headers


def test_checks_run_in_order_timestamp_before_key_before_signature(
    sim: SimulatorProcess, signer: TestSigner
) -> None:
    stale_unknown = _other_key("00000000-0000-0000-0000-000000000000").headers(
        "GET", BALANCE, skew_ms=-60_000
    )
    resp = requests.get(f"{sim.base_url}{BALANCE}", headers=stale_unknown, timeout=10)
    assert resp.json() == TIMESTAMP_EXPIRED
    unknown_and_unsigned = {HEADER_KEY: "nobody", HEADER_TIMESTAMP: "1"}
    resp = requests.get(f"{sim.base_url}{BALANCE}", headers=unknown_and_unsigned, timeout=10)
    assert resp.json() == MISSING_SIGNATURE


def test_signed_websocket_handshake_is_accepted(sim: SimulatorProcess, signer: TestSigner) -> None:
    async def run() -> dict[str, Any]:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            return await command(ws, {"id": 1, "cmd": "list_subscriptions"})
        finally:
            await ws.close()

    assert asyncio.run(run()) == {"type": "ok", "id": 1, "msg": []}


@pytest.mark.parametrize(("case", "make", "body"), BAD_AUTH, ids=IDS)
def test_bad_handshake_auth_gets_401_before_upgrade(
    sim: SimulatorProcess,
    signer: TestSigner,
    case: str,
    make: Callable[[TestSigner, str, str], dict[str, str]],
    body: dict[str, Any],
) -> None:
    async def run() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as info:
            ws = await connect(sim.ws_url, additional_headers=make(signer, "GET", WS_PATH))
            await ws.close()
        return info.value

    err = asyncio.run(run())
    assert err.response.status_code == 401, case
    assert json.loads(err.response.body) == body, case


def test_unsigned_handshake_is_refused(sim: SimulatorProcess) -> None:
    async def run() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as info:
            await connect(sim.ws_url)
        return info.value

    err = asyncio.run(run())
    assert err.response.status_code == 401
    assert json.loads(err.response.body) == MISSING_SIGNATURE

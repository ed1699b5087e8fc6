"""Signatures on REST and on the WebSocket handshake, with Kalshi's exact 401 bodies (§2), for
keys of both types: `key_signer` is the Ed25519 dev key and an RSA key from --register-key in
turn, and each bad case is tried with each."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from kalshi_pipeline.kalshi.auth import HEADER_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP
from kalshi_pipeline.kalshi.devkey import ensure_dev_key, generate_private_key_pem
from kalshi_pipeline.simulator.process import SimulatorProcess, SimulatorStartError
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


def _other_key(key_id: str, key_type: str = "ed25519") -> TestSigner:
    key = serialization.load_pem_private_key(generate_private_key_pem(key_type), None)
    return TestSigner(key_id, key)  # type: ignore[arg-type]


def _wrong_key(signer: TestSigner, method: str, path: str) -> dict[str, str]:
    return _other_key(signer.key_id, signer.key_type).headers(method, path)


def _wrong_key_type(signer: TestSigner, method: str, path: str) -> dict[str, str]:
    # an RSA key used under an Ed25519 key's id, or the reverse
    other = "rsa" if signer.key_type == "ed25519" else "ed25519"
    return _other_key(signer.key_id, other).headers(method, path)


def _other_key_type(signer: TestSigner, method: str, path: str) -> dict[str, str]:
    # a signature by a key Kalshi does not issue (ECDSA P-256) under a registered id
    headers = signer.headers(method, path)
    message = f"{headers[HEADER_TIMESTAMP]}{method}{path}".encode()
    ecdsa = ec.generate_private_key(ec.SECP256R1()).sign(message, ec.ECDSA(hashes.SHA256()))
    headers[HEADER_SIGNATURE] = base64.b64encode(ecdsa).decode()
    return headers


def _unknown_key(signer: TestSigner, method: str, path: str) -> dict[str, str]:
    return _other_key("00000000-0000-0000-0000-000000000000", signer.key_type).headers(method, path)


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
    ("private key of the other type", _wrong_key_type, BAD_SIGNATURE),
    ("ECDSA signature", _other_key_type, BAD_SIGNATURE),
    ("unknown key id", _unknown_key, UNKNOWN_KEY),
    ("signature header missing", _missing_signature, MISSING_SIGNATURE),
    ("timestamp 30 s in the past", _past, TIMESTAMP_EXPIRED),
    ("timestamp 5 min in the future", _future, TIMESTAMP_EXPIRED),
    ("timestamp in seconds", _seconds_timestamp, TIMESTAMP_EXPIRED),
    ("query string signed", _query_signed, BAD_SIGNATURE),
    ("relative path signed", _relative_path, BAD_SIGNATURE),
]
IDS = [case[0] for case in BAD_AUTH]


@pytest.fixture(params=["ed25519", "rsa"])
def key_signer(
    request: pytest.FixtureRequest, signer: TestSigner, extra_key: tuple[TestSigner, Path]
) -> TestSigner:
    """The dev key (Ed25519) or the key given with --register-key (RSA)."""
    chosen = signer if request.param == "ed25519" else extra_key[0]
    assert chosen.key_type == request.param
    return chosen


def test_public_market_data_needs_no_signature(sim: SimulatorProcess) -> None:
    for path in ("/markets?limit=2", "/events?limit=2", "/series", "/exchange/status"):
        resp = requests.get(f"{sim.rest_url}{path}", timeout=10)
        assert resp.status_code == 200, (path, resp.text)


def test_signed_requests_are_accepted(sim: SimulatorProcess, key_signer: TestSigner) -> None:
    resp = requests.get(f"{sim.base_url}{BALANCE}", headers=key_signer.headers("GET", BALANCE))
    assert resp.status_code == 200, resp.text
    assert resp.json()["balance_dollars"] == "1000.0000"
    # The query string is not part of what is signed.
    resp = requests.get(
        f"{sim.base_url}{MARKETS}?limit=3", headers=key_signer.headers("GET", MARKETS), timeout=10
    )
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["markets"]) == 3


def test_clock_skew_inside_the_window_is_accepted(
    sim: SimulatorProcess, key_signer: TestSigner
) -> None:
    for skew_ms in (-5_000, 30_000):
        headers = key_signer.headers("GET", BALANCE, skew_ms=skew_ms)
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
    key_signer: TestSigner,
    case: str,
    make: Callable[[TestSigner, str, str], dict[str, str]],
    body: dict[str, Any],
    path: str,
) -> None:
    resp = requests.get(f"{sim.base_url}{path}", headers=make(key_signer, "GET", path), timeout=10)
    assert resp.status_code == 401, (case, resp.text)
    assert resp.json() == body, case
    assert "Retry-After" not in resp.headers


def test_checks_run_in_order_timestamp_before_key_before_signature(
    sim: SimulatorProcess, key_signer: TestSigner
) -> None:
    stale_unknown = _other_key("00000000-0000-0000-0000-000000000000").headers(
        "GET", BALANCE, skew_ms=-60_000
    )
    resp = requests.get(f"{sim.base_url}{BALANCE}", headers=stale_unknown, timeout=10)
    assert resp.json() == TIMESTAMP_EXPIRED
    unknown_and_unsigned = {HEADER_KEY: "nobody", HEADER_TIMESTAMP: "1"}
    resp = requests.get(f"{sim.base_url}{BALANCE}", headers=unknown_and_unsigned, timeout=10)
    assert resp.json() == MISSING_SIGNATURE


def test_signed_websocket_handshake_is_accepted(
    sim: SimulatorProcess, key_signer: TestSigner
) -> None:
    async def run() -> dict[str, Any]:
        ws = await ws_connect(sim.ws_url, key_signer)
        try:
            return await command(ws, {"id": 1, "cmd": "list_subscriptions"})
        finally:
            await ws.close()

    assert asyncio.run(run()) == {"type": "ok", "id": 1, "msg": []}


@pytest.mark.parametrize(("case", "make", "body"), BAD_AUTH, ids=IDS)
def test_bad_handshake_auth_gets_401_before_upgrade(
    sim: SimulatorProcess,
    key_signer: TestSigner,
    case: str,
    make: Callable[[TestSigner, str, str], dict[str, str]],
    body: dict[str, Any],
) -> None:
    async def run() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as info:
            ws = await connect(sim.ws_url, additional_headers=make(key_signer, "GET", WS_PATH))
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


# --------------------------------------------------------------------------- keys at start


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _private_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _balance_status(sim: SimulatorProcess, signer: TestSigner) -> int:
    resp = requests.get(f"{sim.base_url}{BALANCE}", headers=signer.headers("GET", BALANCE))
    return resp.status_code


def test_register_key_takes_either_type_as_a_public_or_a_private_pem(
    start_sim: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    signers: list[TestSigner] = []
    register: list[tuple[str, Path]] = []
    for key_type in ("ed25519", "rsa"):
        for half in ("public", "private"):
            key_id = f"{key_type}-{half}"
            pem = generate_private_key_pem(key_type)
            signer = TestSigner(key_id, serialization.load_pem_private_key(pem, None))  # type: ignore[arg-type]
            data = pem if half == "private" else _public_pem(signer.key)
            register.append((key_id, _write_pem(tmp_path / f"{key_id}.pem", data)))
            signers.append(signer)

    sim = start_sim(rate=0, register_keys=register)

    assert [(s.key_id, _balance_status(sim, s)) for s in signers] == [
        (s.key_id, 200) for s in signers
    ]


@pytest.mark.parametrize(
    ("make_pem", "expected"),
    [
        (
            lambda: _public_pem(ec.generate_private_key(ec.SECP256R1())),
            "is a key of type EC (secp256r1)",
        ),
        (lambda: _private_pem(ed448.Ed448PrivateKey.generate()), "is a key of type Ed448"),
        (lambda: _private_pem(dsa.generate_private_key(2048)), "is a key of type DSA"),
        (lambda: generate_private_key_pem("rsa")[:300], "not a usable private key PEM"),
    ],
    ids=["ec-public", "ed448-private", "dsa-private", "truncated"],
)
def test_register_key_of_another_type_or_cut_short_stops_the_simulator_naming_the_file(
    start_sim: Callable[..., SimulatorProcess],
    tmp_path: Path,
    make_pem: Callable[[], bytes],
    expected: str,
) -> None:
    path = _write_pem(tmp_path / "other.pem", make_pem())
    with pytest.raises(SimulatorStartError) as caught:
        start_sim(rate=0, register_keys=[("odd-key", path)])
    message = str(caught.value)
    assert "exited with status 2" in message
    assert f"--register-key odd-key={path}" in message
    assert expected in message


def test_dev_key_type_rsa_makes_an_rsa_dev_key_and_accepts_it(
    start_sim: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    sim = start_sim(rate=0, kalshi_home=home, extra_args=["--dev-key-type", "rsa"])
    dev = ensure_dev_key(home)
    signer = TestSigner.from_pem_file(dev.key_id, dev.private_key_path)
    assert signer.key_type == "rsa"
    assert _balance_status(sim, signer) == 200


def test_a_new_dev_key_is_ed25519_by_default(
    start_sim: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    sim = start_sim(rate=0, kalshi_home=home)
    dev = ensure_dev_key(home)
    signer = TestSigner.from_pem_file(dev.key_id, dev.private_key_path)
    assert signer.key_type == "ed25519"
    assert _balance_status(sim, signer) == 200


def test_an_rsa_dev_key_from_an_earlier_version_is_kept_and_accepted(
    start_sim: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _write_pem(home / "dev-key.pem", generate_private_key_pem("rsa"))
    (home / "dev-key-id").write_text("11111111-2222-4333-8444-555555555555\n")
    before = (home / "dev-key.pem").read_bytes()

    sim = start_sim(rate=0, kalshi_home=home)

    assert (home / "dev-key.pem").read_bytes() == before
    signer = TestSigner.from_pem_file("11111111-2222-4333-8444-555555555555", home / "dev-key.pem")
    assert _balance_status(sim, signer) == 200
    # an Ed25519 key under the RSA dev key's id is the wrong key, as on Kalshi
    resp = requests.get(
        f"{sim.base_url}{BALANCE}", headers=_wrong_key_type(signer, "GET", BALANCE), timeout=10
    )
    assert (resp.status_code, resp.json()) == (401, BAD_SIGNATURE)


def test_dev_key_type_other_than_the_key_on_disk_stops_the_simulator_naming_the_file(
    start_sim: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    ensure_dev_key(home)  # Ed25519
    before = (home / "dev-key.pem").read_bytes()
    with pytest.raises(SimulatorStartError) as caught:
        start_sim(rate=0, kalshi_home=home, extra_args=["--dev-key-type", "rsa"])
    message = str(caught.value)
    assert f"{home / 'dev-key.pem'} is ed25519, not rsa" in message
    assert "delete" in message
    assert (home / "dev-key.pem").read_bytes() == before

"""Request signing and key loading (kalshi-protocol.md §2)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from kalshi_pipeline.kalshi.auth import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    Signer,
    load_private_key,
    signing_message,
)
from kalshi_pipeline.kalshi.errors import KalshiConfigError

KEY_ID = "a952bcbe-ec3b-4b5b-b8f9-11dae589608c"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_key(path: Path, pem: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(pem)
    os.chmod(path, mode)
    return path


def pem_of(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
    passphrase: bytes | None = None,
) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)


def pss(salt_length: int) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt_length)


# --------------------------------------------------------------------------- the signed string


def test_signing_message_drops_the_query_string() -> None:
    assert (
        signing_message(1703123456789, "GET", "/trade-api/v2/portfolio/orders?limit=5")
        == b"1703123456789GET/trade-api/v2/portfolio/orders"
    )


def test_signing_message_upper_cases_the_method() -> None:
    assert signing_message("1", "get", "/trade-api/v2/markets") == b"1GET/trade-api/v2/markets"
    assert signing_message("1", "Delete", "/trade-api/v2/x") == b"1DELETE/trade-api/v2/x"


def test_signing_message_keeps_the_api_prefix_and_drops_the_host() -> None:
    message = signing_message(
        "1703123456789",
        "GET",
        "https://external-api.kalshi.com/trade-api/v2/portfolio/balance?x=1#frag",
    )
    assert message == b"1703123456789GET/trade-api/v2/portfolio/balance"


def test_websocket_handshake_signs_the_ws_path() -> None:
    message = signing_message(5, "GET", "wss://external-api-ws.kalshi.com/trade-api/ws/v2")
    assert message == b"5GET/trade-api/ws/v2"


# --------------------------------------------------------------------------- the signature


def test_signature_verifies_with_pss_mgf1_sha256_and_a_32_byte_salt(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    signer = Signer(KEY_ID, rsa_key)
    headers = signer.headers(
        "get", "http://127.0.0.1:8700/trade-api/v2/markets?limit=5", now_ms=1703123456789
    )

    assert headers[HEADER_KEY] == KEY_ID
    assert headers[HEADER_TIMESTAMP] == "1703123456789"
    signature = base64.b64decode(headers[HEADER_SIGNATURE], validate=True)
    assert len(signature) == 256  # 2048-bit key
    rsa_key.public_key().verify(
        signature, b"1703123456789GET/trade-api/v2/markets", pss(32), hashes.SHA256()
    )


@pytest.mark.parametrize("salt_length", [0, 20, 64, 222], ids=lambda n: f"salt-{n}")
def test_signature_does_not_verify_with_any_other_salt_length(
    rsa_key: rsa.RSAPrivateKey, salt_length: int
) -> None:
    # 222 = emLen - hLen - 2 for a 2048-bit key: the salt PSS.MAX_LENGTH would sign with.
    # (cryptography's verify treats PSS.MAX_LENGTH like AUTO and accepts any salt, so the
    # maximum is spelled out to prove the signer does not use it.)
    message = b"1GET/trade-api/v2/portfolio/balance"
    signature = base64.b64decode(Signer(KEY_ID, rsa_key).sign(message))
    with pytest.raises(InvalidSignature):
        rsa_key.public_key().verify(signature, message, pss(salt_length), hashes.SHA256())


def test_a_max_length_salt_signature_is_not_what_the_signer_produces(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    # the converse: a signature made with PSS.MAX_LENGTH fails the 32-byte-salt check that
    # Kalshi's samples (and the simulator) apply
    message = b"1GET/trade-api/v2/portfolio/balance"
    max_salt = rsa_key.sign(
        message,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
        hashes.SHA256(),
    )
    with pytest.raises(InvalidSignature):
        rsa_key.public_key().verify(max_salt, message, pss(32), hashes.SHA256())
    ours = base64.b64decode(Signer(KEY_ID, rsa_key).sign(message))
    rsa_key.public_key().verify(ours, message, pss(32), hashes.SHA256())


def test_signature_over_the_query_string_does_not_verify_for_the_bare_path(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    signer = Signer(KEY_ID, rsa_key)
    with_query = base64.b64decode(signer.sign(b"1GET/trade-api/v2/markets?limit=5"))
    with pytest.raises(InvalidSignature):
        rsa_key.public_key().verify(
            with_query, b"1GET/trade-api/v2/markets", pss(32), hashes.SHA256()
        )


def test_headers_are_signed_now_by_default(rsa_key: rsa.RSAPrivateKey) -> None:
    import time

    before = time.time_ns() // 1_000_000
    headers = Signer(KEY_ID, rsa_key).headers("GET", "/trade-api/v2/markets")
    after = time.time_ns() // 1_000_000
    assert before <= int(headers[HEADER_TIMESTAMP]) <= after


def test_signer_repr_shows_neither_key_nor_signature(rsa_key: rsa.RSAPrivateKey) -> None:
    signer = Signer(KEY_ID, rsa_key)
    signature = signer.headers("GET", "/trade-api/v2/markets", now_ms=1)[HEADER_SIGNATURE]
    pem = pem_of(rsa_key).decode()
    body_line = pem.splitlines()[1]

    for text in (repr(signer), str(signer)):
        assert KEY_ID in text
        assert signature not in text
        assert signature[:16] not in text
        assert body_line not in text
        assert "PRIVATE" not in text
        assert "RSAPrivateKey" not in text
    assert not hasattr(signer, "__dict__")  # nothing else hangs off it to leak


def test_signer_refuses_an_empty_key_id(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(KalshiConfigError, match="KALSHI_API_KEY_ID"):
        Signer("", rsa_key)


# --------------------------------------------------------------------------- loading keys


@pytest.mark.parametrize(
    "fmt",
    [serialization.PrivateFormat.TraditionalOpenSSL, serialization.PrivateFormat.PKCS8],
    ids=["pkcs1", "pkcs8"],
)
def test_pkcs1_and_pkcs8_keys_both_load_and_sign(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat
) -> None:
    pem = pem_of(rsa_key, fmt)
    label = b"RSA PRIVATE" if fmt is serialization.PrivateFormat.TraditionalOpenSSL else b"PRIVATE"
    assert pem.startswith(b"-----BEGIN " + label + b" KEY-----")
    path = write_key(tmp_path / "kalshi.pem", pem)

    signer = Signer.from_file(KEY_ID, path)
    signature = base64.b64decode(signer.sign(b"1GET/trade-api/v2/x"))
    rsa_key.public_key().verify(signature, b"1GET/trade-api/v2/x", pss(32), hashes.SHA256())
    assert load_private_key(path).private_numbers() == rsa_key.private_numbers()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_key_file_readable_by_others_is_refused_with_chmod_hint(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, mode: int
) -> None:
    path = write_key(tmp_path / "loose.pem", pem_of(rsa_key), mode)
    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(path)
    message = str(caught.value)
    assert str(path) in message
    assert "chmod 600" in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_key_file_readable_only_by_its_owner_loads(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, mode: int
) -> None:
    path = write_key(tmp_path / "tight.pem", pem_of(rsa_key), mode)
    assert isinstance(load_private_key(path), rsa.RSAPrivateKey)


def test_missing_key_file_raises_one_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "kalshi.pem"
    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(path)
    assert str(path) in str(caught.value)
    assert "KALSHI_PRIVATE_KEY_PATH" in str(caught.value)
    assert caught.value.__suppress_context__  # one error, not a chain of tracebacks


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a key\n",
        b"",
        b"-----BEGIN PRIVATE" + b" KEY-----\nAAAA\n-----END PRIVATE" + b" KEY-----\n",
        os.urandom(64),
    ],
    ids=["text", "empty", "bad-pem-body", "random-bytes"],
)
def test_garbage_key_file_raises_one_config_error_naming_the_path(
    tmp_path: Path, content: bytes
) -> None:
    path = write_key(tmp_path / "garbage.pem", content)
    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(path)
    assert str(path) in str(caught.value)
    assert caught.value.__suppress_context__


def test_a_directory_as_key_path_raises_a_config_error_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(folder)
    assert str(folder) in str(caught.value)


def test_non_rsa_key_is_refused(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    path = write_key(tmp_path / "ec.pem", pem_of(ec_key))
    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(path)
    assert str(path) in str(caught.value)
    assert "RSA" in str(caught.value)


def test_encrypted_key_needs_the_passphrase(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = write_key(tmp_path / "enc.pem", pem_of(rsa_key, passphrase=b"correct horse"))

    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(path)
    assert "KALSHI_PRIVATE_KEY_PASSPHRASE" in str(caught.value)
    assert str(path) in str(caught.value)

    key = load_private_key(path, "correct horse")
    assert key.private_numbers() == rsa_key.private_numbers()


def test_wrong_passphrase_is_a_config_error_without_the_passphrase(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    path = write_key(tmp_path / "enc.pem", pem_of(rsa_key, passphrase=b"correct horse"))
    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(path, "battery staple")
    assert str(path) in str(caught.value)
    assert "battery staple" not in str(caught.value)


def test_passphrase_for_an_unencrypted_key_is_reported(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    path = write_key(tmp_path / "plain.pem", pem_of(rsa_key))
    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(path, "unneeded")
    assert "KALSHI_PRIVATE_KEY_PASSPHRASE" in str(caught.value)

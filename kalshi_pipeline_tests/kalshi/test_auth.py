"""Request signing and key loading, for Ed25519 and RSA keys alike."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa, x25519

from kalshi_pipeline.kalshi.auth import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    KeyType,
    Signer,
    load_private_key,
    signing_message,
)
from kalshi_pipeline.kalshi.errors import KalshiConfigError
from kalshi_pipeline_tests.keys import (
    KEY_TYPES,
    PrivateKey,
    new_private_key,
    pem_of,
    verify,
    write_key,
)

KEY_ID = "a952bcbe-ec3b-4b5b-b8f9-11dae589608c"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module", params=KEY_TYPES)
def private_key(request: pytest.FixtureRequest) -> PrivateKey:
    """One key of each type Kalshi issues; every test using it runs once per type."""
    return new_private_key(request.param)


def same_key(a: PrivateKey, b: PrivateKey) -> bool:
    raw = serialization.Encoding.DER, serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    return a.private_bytes(*raw, none) == b.private_bytes(*raw, none)


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


def test_signature_verifies_for_the_signed_message_with_the_keys_own_algorithm(
    private_key: PrivateKey,
) -> None:
    signer = Signer(KEY_ID, private_key)
    headers = signer.headers(
        "get", "http://127.0.0.1:8700/trade-api/v2/markets?limit=5", now_ms=1703123456789
    )

    assert headers[HEADER_KEY] == KEY_ID
    assert headers[HEADER_TIMESTAMP] == "1703123456789"
    signature = base64.b64decode(headers[HEADER_SIGNATURE], validate=True)
    verify(private_key.public_key(), signature, b"1703123456789GET/trade-api/v2/markets")
    with pytest.raises(InvalidSignature):  # and for nothing else
        verify(private_key.public_key(), signature, b"1703123456790GET/trade-api/v2/markets")


def test_ed25519_signature_is_64_bytes_of_plain_ed25519() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    signer = Signer(KEY_ID, key)
    assert signer.key_type is KeyType.ED25519
    message = b"1703123456789GET/trade-api/ws/v2"
    signature = base64.b64decode(signer.sign(message), validate=True)
    assert len(signature) == 64
    key.public_key().verify(signature, message)
    # Ed25519 is deterministic: the same text always gives the same signature
    assert signer.sign(message) == signer.sign(message)


def test_rsa_signature_is_pss_mgf1_sha256_with_a_32_byte_salt(rsa_key: rsa.RSAPrivateKey) -> None:
    signer = Signer(KEY_ID, rsa_key)
    assert signer.key_type is KeyType.RSA
    message = b"1703123456789GET/trade-api/v2/markets"
    signature = base64.b64decode(signer.sign(message), validate=True)
    assert len(signature) == 256  # 2048-bit key
    rsa_key.public_key().verify(signature, message, pss(32), hashes.SHA256())


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
    private_key: PrivateKey,
) -> None:
    signer = Signer(KEY_ID, private_key)
    with_query = base64.b64decode(signer.sign(b"1GET/trade-api/v2/markets?limit=5"))
    with pytest.raises(InvalidSignature):
        verify(private_key.public_key(), with_query, b"1GET/trade-api/v2/markets")


def test_headers_are_signed_now_by_default(private_key: PrivateKey) -> None:
    before = time.time_ns() // 1_000_000
    headers = Signer(KEY_ID, private_key).headers("GET", "/trade-api/v2/markets")
    after = time.time_ns() // 1_000_000
    assert before <= int(headers[HEADER_TIMESTAMP]) <= after


def test_signer_repr_shows_neither_key_nor_signature(private_key: PrivateKey) -> None:
    signer = Signer(KEY_ID, private_key)
    signature = signer.headers("GET", "/trade-api/v2/markets", now_ms=1)[HEADER_SIGNATURE]
    pem = pem_of(private_key).decode()
    body_line = pem.splitlines()[1]

    for text in (repr(signer), str(signer)):
        assert KEY_ID in text
        assert signature not in text
        assert signature[:16] not in text
        assert body_line not in text
        assert "PRIVATE" not in text
        assert "PrivateKey" not in text
    assert not hasattr(signer, "__dict__")  # nothing else hangs off it to leak


def test_signer_refuses_an_empty_key_id(private_key: PrivateKey) -> None:
    with pytest.raises(KalshiConfigError, match="KALSHI_API_KEY_ID"):
        Signer("", private_key)


def test_signer_built_in_memory_refuses_a_key_of_another_type() -> None:
    with pytest.raises(KalshiConfigError) as caught:
        Signer(KEY_ID, ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]
    assert KEY_ID in str(caught.value)
    assert "EC (secp256r1)" in str(caught.value)


# --------------------------------------------------------------------------- loading keys


@pytest.mark.parametrize(
    ("key_type", "fmt", "label"),
    [
        ("rsa", serialization.PrivateFormat.TraditionalOpenSSL, b"RSA PRIVATE KEY"),
        ("rsa", serialization.PrivateFormat.PKCS8, b"PRIVATE KEY"),
        ("ed25519", serialization.PrivateFormat.PKCS8, b"PRIVATE KEY"),
    ],
    ids=["rsa-pkcs1", "rsa-pkcs8", "ed25519-pkcs8"],
)
def test_keys_load_and_sign_with_the_type_found_in_the_key(
    tmp_path: Path, key_type: str, fmt: serialization.PrivateFormat, label: bytes
) -> None:
    key = new_private_key(key_type)
    pem = pem_of(key, fmt)
    assert pem.startswith(b"-----BEGIN " + label + b"-----")
    path = write_key(tmp_path / "kalshi.pem", pem)

    signer = Signer.from_file(KEY_ID, path)
    assert signer.key_type.value == key_type
    assert signer.key_file == path
    signature = base64.b64decode(signer.sign(b"1GET/trade-api/v2/x"))
    verify(key.public_key(), signature, b"1GET/trade-api/v2/x")
    assert same_key(load_private_key(path), key)


def test_the_pem_header_does_not_decide_the_type(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    # Kalshi's Ed25519 keys and PKCS#8 RSA keys carry the same header; each signs as its key is
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_path = write_key(tmp_path / "ed.pem", pem_of(ed_key))
    rsa_path = write_key(tmp_path / "rsa.pem", pem_of(rsa_key))
    assert ed_path.read_bytes().splitlines()[0] == rsa_path.read_bytes().splitlines()[0]

    message = b"5GET/trade-api/ws/v2"
    ed_sig = base64.b64decode(Signer.from_file(KEY_ID, ed_path).sign(message))
    rsa_sig = base64.b64decode(Signer.from_file(KEY_ID, rsa_path).sign(message))
    ed_key.public_key().verify(ed_sig, message)
    rsa_key.public_key().verify(rsa_sig, message, pss(32), hashes.SHA256())
    assert (len(ed_sig), len(rsa_sig)) == (64, 256)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_key_file_readable_by_others_is_refused_with_chmod_hint(
    tmp_path: Path, private_key: PrivateKey, mode: int
) -> None:
    path = write_key(tmp_path / "loose.pem", pem_of(private_key), mode)
    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(path)
    message = str(caught.value)
    assert str(path) in message
    assert "chmod 600" in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_key_file_readable_only_by_its_owner_loads(
    tmp_path: Path, private_key: PrivateKey, mode: int
) -> None:
    path = write_key(tmp_path / "tight.pem", pem_of(private_key), mode)
    assert same_key(load_private_key(path), private_key)


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
    assert "KALSHI_PRIVATE_KEY_PATH" in str(caught.value)  # the fix
    assert caught.value.__suppress_context__


@pytest.mark.parametrize("keep", [0.3, 0.8], ids=["cut-early", "cut-late"])
def test_truncated_pem_is_one_error_naming_the_file_and_the_fix(
    tmp_path: Path, private_key: PrivateKey, keep: float
) -> None:
    pem = pem_of(private_key)
    path = write_key(tmp_path / "cut.pem", pem[: int(len(pem) * keep)])
    with pytest.raises(KalshiConfigError) as caught:
        Signer.from_file(KEY_ID, path)
    message = str(caught.value)
    assert str(path) in message
    assert "cut short" in message
    assert "END line" in message
    assert caught.value.__context__ is None  # one error, not a chain of tracebacks


def test_a_directory_as_key_path_raises_a_config_error_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(folder)
    assert str(folder) in str(caught.value)


@pytest.mark.parametrize(
    ("make", "type_name"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "EC (secp256r1)"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "EC (secp384r1)"),
        (lambda: dsa.generate_private_key(2048), "DSA"),
        (ed448.Ed448PrivateKey.generate, "Ed448"),
        (x25519.X25519PrivateKey.generate, "X25519"),
    ],
    ids=["ec-p256", "ec-p384", "dsa", "ed448", "x25519"],
)
def test_a_key_of_another_type_is_refused_naming_the_file_and_the_type(
    tmp_path: Path, make: object, type_name: str
) -> None:
    path = write_key(tmp_path / "other.pem", pem_of(make()))  # type: ignore[operator]
    with pytest.raises(KalshiConfigError) as caught:
        Signer.from_file(KEY_ID, path)
    message = str(caught.value)
    assert str(path) in message
    assert f"holds a key of type {type_name}" in message
    assert "Ed25519 or RSA" in message


@pytest.mark.parametrize(
    ("key_type", "fmt"),
    [
        ("rsa", serialization.PrivateFormat.TraditionalOpenSSL),
        ("rsa", serialization.PrivateFormat.PKCS8),
        ("ed25519", serialization.PrivateFormat.PKCS8),  # Ed25519 keys exist only as PKCS#8
    ],
    ids=["rsa-pkcs1", "rsa-pkcs8", "ed25519-pkcs8"],
)
def test_encrypted_key_needs_the_passphrase(
    tmp_path: Path, key_type: str, fmt: serialization.PrivateFormat
) -> None:
    private_key = new_private_key(key_type)
    path = write_key(tmp_path / "enc.pem", pem_of(private_key, fmt, passphrase=b"correct horse"))

    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(path)
    assert "KALSHI_PRIVATE_KEY_PASSPHRASE" in str(caught.value)
    assert str(path) in str(caught.value)

    assert same_key(load_private_key(path, "correct horse"), private_key)
    signer = Signer.from_file(KEY_ID, path, "correct horse")
    verify(private_key.public_key(), base64.b64decode(signer.sign(b"m")), b"m")


def test_wrong_passphrase_is_a_config_error_without_the_passphrase(
    tmp_path: Path, private_key: PrivateKey
) -> None:
    path = write_key(tmp_path / "enc.pem", pem_of(private_key, passphrase=b"correct horse"))
    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(path, "battery staple")
    assert str(path) in str(caught.value)
    assert "passphrase is wrong" in str(caught.value)
    assert "battery staple" not in str(caught.value)


def test_passphrase_for_an_unencrypted_key_is_reported(
    tmp_path: Path, private_key: PrivateKey
) -> None:
    path = write_key(tmp_path / "plain.pem", pem_of(private_key))
    with pytest.raises(KalshiConfigError) as caught:
        load_private_key(path, "unneeded")
    assert "KALSHI_PRIVATE_KEY_PASSPHRASE" in str(caught.value)

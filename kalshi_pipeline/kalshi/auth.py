"""Request signing as Kalshi does it: Ed25519 or RSA-PSS, whichever the key is (Ed25519 keys
since September 2026, Kalshi's default for new keys since October 1).

The message is `timestamp_ms + METHOD + path`, the path taken from the root with no host and no
query string. An Ed25519 key signs those bytes directly (a 64-byte signature); an RSA key signs
them with RSA-PSS over SHA-256, MGF1-SHA-256 and a 32-byte salt. Either way the signature goes
out in base64. The type is read from the parsed key, never from the PEM header: Kalshi's Ed25519
keys and PKCS#8 RSA keys share one header line (`BEGIN PRIVATE KEY`). The key is read once; neither
it nor any signature ever reaches a log (no repr shows them).
"""

from __future__ import annotations

import base64
import os
import stat
import time
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    padding,
    rsa,
    x448,
    x25519,
)

from kalshi_pipeline.kalshi.errors import KalshiConfigError

SALT_LENGTH = 32  # = SHA-256 digest length, as in Kalshi's own samples
PSS_PADDING = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=SALT_LENGTH)

HEADER_KEY = "KALSHI-ACCESS-KEY"
HEADER_SIGNATURE = "KALSHI-ACCESS-SIGNATURE"
HEADER_TIMESTAMP = "KALSHI-ACCESS-TIMESTAMP"

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class KeyType(StrEnum):
    """The two kinds of API key Kalshi issues."""

    ED25519 = "ed25519"
    RSA = "rsa"


def key_type_of(key: object) -> KeyType | None:
    """The Kalshi key type of a parsed private or public key; None for any other kind."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return KeyType.RSA
    return None


def describe_key_type(key: object) -> str:
    """A readable name for any parsed key, for messages that refuse it."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"EC ({key.curve.name})"
    for kinds, name in (
        ((ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey), "Ed25519"),
        ((rsa.RSAPrivateKey, rsa.RSAPublicKey), "RSA"),
        ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "DSA"),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "Ed448"),
        ((x25519.X25519PrivateKey, x25519.X25519PublicKey), "X25519"),
        ((x448.X448PrivateKey, x448.X448PublicKey), "X448"),
    ):
        if isinstance(key, kinds):
            return name
    return type(key).__name__


def unsupported_key_message(source: str, key: object) -> str:
    """Why a key of another type is refused, naming where it came from and the fix."""
    return (
        f"{source} holds a key of type {describe_key_type(key)}; Kalshi API keys are Ed25519 "
        "or RSA: use the private key file Kalshi gave you when you made the API key"
    )


def signed_path(url_or_path: str) -> str:
    """The part of a URL that is signed: its path from the root, without host or query."""
    return urlsplit(url_or_path).path or "/"


def signing_message(timestamp_ms: int | str, method: str, path: str) -> bytes:
    """`ts_ms + METHOD + path`, with any query string removed from the path."""
    return f"{timestamp_ms}{method.upper()}{signed_path(path)}".encode()


PEM_DASHES = b"-" * 5  # what opens a PEM armour line


def _looks_truncated(data: bytes) -> bool:
    """A PEM whose BEGIN line has no END line after it: cut off in a copy or a download."""
    begin = data.find(PEM_DASHES + b"BEGIN ")
    return begin >= 0 and data.find(PEM_DASHES + b"END ", begin) < 0


def load_private_key(path: str | os.PathLike[str], passphrase: str | None = None) -> PrivateKey:
    """Read an Ed25519 or RSA private key (PKCS#1 or PKCS#8 PEM, encrypted or not), refusing
    files others can read and keys of any other type."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise KalshiConfigError(
            f"private key file {p} does not exist: set KALSHI_PRIVATE_KEY_PATH to the PEM file "
            "Kalshi gave you when you made the API key"
        ) from None
    except OSError as exc:
        raise KalshiConfigError(f"private key file {p} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KalshiConfigError(f"private key path {p} is not a regular file")
    if st.st_mode & 0o077:
        raise KalshiConfigError(
            f"private key file {p} is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {p}"
        )
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise KalshiConfigError(f"private key file {p} cannot be read: {exc.strerror}") from None
    if _looks_truncated(data):
        raise KalshiConfigError(
            f"private key file {p} is cut short (its BEGIN line has no END line): "
            "copy the whole file Kalshi gave you again, END line included"
        )
    password = passphrase.encode() if passphrase else None
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError:
        raise KalshiConfigError(
            f"private key file {p} is encrypted: set KALSHI_PRIVATE_KEY_PASSPHRASE"
            if password is None
            else f"private key file {p} is not encrypted: unset KALSHI_PRIVATE_KEY_PASSPHRASE"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        hint = "the passphrase is wrong, or " if password else ""
        raise KalshiConfigError(
            f"private key file {p} is not a usable private key ({hint}it is not a PEM file in "
            "PKCS#1 or PKCS#8 format, or it is damaged): set KALSHI_PRIVATE_KEY_PATH to the "
            "file Kalshi gave you when you made the API key"
        ) from None
    if key_type_of(key) is None:
        raise KalshiConfigError(unsupported_key_message(f"private key file {p}", key))
    return key  # type: ignore[return-value]


class Signer:
    """Signs requests for one API key. Built once; the key stays in memory only.

    `key_file` (when the key came from a file) lets errors name the file to check.
    """

    __slots__ = ("_key", "key_file", "key_id", "key_type")

    def __init__(
        self, key_id: str, private_key: PrivateKey, *, key_file: Path | None = None
    ) -> None:
        if not key_id:
            raise KalshiConfigError("KALSHI_API_KEY_ID is empty: set it to the key's id")
        key_type = key_type_of(private_key)
        if key_type is None or not isinstance(
            private_key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
        ):
            source = f"private key file {key_file}" if key_file else f"the key for {key_id}"
            raise KalshiConfigError(unsupported_key_message(source, private_key))
        self.key_id = key_id
        self.key_type = key_type
        self.key_file = key_file
        self._key = private_key

    @classmethod
    def from_file(
        cls, key_id: str, path: str | os.PathLike[str], passphrase: str | None = None
    ) -> Signer:
        p = Path(path).expanduser()
        return cls(key_id, load_private_key(p, passphrase), key_file=p)

    def sign(self, message: bytes) -> str:
        key = self._key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return base64.b64encode(key.sign(message)).decode()
        return base64.b64encode(key.sign(message, PSS_PADDING, hashes.SHA256())).decode()

    def headers(
        self, method: str, url_or_path: str, *, now_ms: int | None = None
    ) -> dict[str, str]:
        """The three KALSHI-ACCESS-* headers for one request, signed now."""
        ts = str(now_ms if now_ms is not None else time.time_ns() // 1_000_000)
        return {
            HEADER_KEY: self.key_id,
            HEADER_TIMESTAMP: ts,
            HEADER_SIGNATURE: self.sign(signing_message(ts, method, url_or_path)),
        }

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r}, key_type={self.key_type.value!r})"

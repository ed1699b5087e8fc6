"""RSA-PSS request signing as Kalshi does it (kalshi-protocol.md §2).

The message is `timestamp_ms + METHOD + path`, the path taken from the root with no host and no
query string; RSA-PSS over SHA-256 with MGF1-SHA-256 and a 32-byte salt; base64. The key is read
once; neither it nor any signature ever reaches a log (no repr shows them).
"""

from __future__ import annotations

import base64
import os
import stat
import time
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kalshi_pipeline.kalshi.errors import KalshiConfigError

SALT_LENGTH = 32  # = SHA-256 digest length, as in Kalshi's own samples
PSS_PADDING = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=SALT_LENGTH)

HEADER_KEY = "KALSHI-ACCESS-KEY"
HEADER_SIGNATURE = "KALSHI-ACCESS-SIGNATURE"
HEADER_TIMESTAMP = "KALSHI-ACCESS-TIMESTAMP"


def signed_path(url_or_path: str) -> str:
    """The part of a URL that is signed: its path from the root, without host or query."""
    return urlsplit(url_or_path).path or "/"


def signing_message(timestamp_ms: int | str, method: str, path: str) -> bytes:
    """`ts_ms + METHOD + path`, with any query string removed from the path."""
    return f"{timestamp_ms}{method.upper()}{signed_path(path)}".encode()


def load_private_key(
    path: str | os.PathLike[str], passphrase: str | None = None
) -> rsa.RSAPrivateKey:
    """Read an RSA private key (PKCS#1 or PKCS#8 PEM), refusing files others can read."""
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
        hint = "the passphrase is wrong or " if password else ""
        raise KalshiConfigError(
            f"private key file {p} is not a usable PEM private key ({hint}it is not an RSA key "
            "in PKCS#1 or PKCS#8 PEM format)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KalshiConfigError(f"private key file {p} holds a non-RSA key; Kalshi uses RSA keys")
    return key


class Signer:
    """Signs requests for one API key. Built once; the key stays in memory only."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key_id: str, private_key: rsa.RSAPrivateKey) -> None:
        if not key_id:
            raise KalshiConfigError("KALSHI_API_KEY_ID is empty: set it to the key's id")
        self.key_id = key_id
        self._key = private_key

    @classmethod
    def from_file(
        cls, key_id: str, path: str | os.PathLike[str], passphrase: str | None = None
    ) -> Signer:
        return cls(key_id, load_private_key(path, passphrase))

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(message, PSS_PADDING, hashes.SHA256())).decode()

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
        return f"Signer(key_id={self.key_id!r})"

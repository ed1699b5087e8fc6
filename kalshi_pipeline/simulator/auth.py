"""Signature checks for REST requests and the WebSocket handshake, with Kalshi's 401 bodies.

Order of checks: the three headers present -> timestamp inside the window -> key id known ->
signature over `ts + METHOD + path-without-query` (kalshi-protocol.md §2), verified by the type
of the key registered under that id: Ed25519, or RSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt).
A signature made by a key of the other type, or by any other key, is INCORRECT_API_KEY_SIGNATURE,
as on Kalshi. Registering a key of any other type (EC, DSA, Ed448...) is refused at start.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from kalshi_pipeline.kalshi.auth import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    PublicKey,
    describe_key_type,
    signing_message,
)
from kalshi_pipeline.kalshi.devkey import ensure_dev_key, kalshi_home
from kalshi_pipeline.kalshi.errors import KalshiConfigError
from kalshi_pipeline.simulator.config import SimConfig

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)

# Bodies as captured from Kalshi's demo service (kalshi-protocol.md §2.7).
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
# Not captured anywhere; shaped like the captured missing-signature body.
MISSING_KEY = (
    b'{"error":{"code":"api_key_is_missing_from_headers",'
    b'"message":"api key is missing from headers"}}'
)
MISSING_TIMESTAMP = (
    b'{"error":{"code":"timestamp_is_missing_from_headers",'
    b'"message":"timestamp is missing from headers"}}'
)
AUTH_HEADERS = (HEADER_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP)


@dataclass(frozen=True)
class AuthFailure:
    body: bytes
    reason: str


class KeyRegistry:
    """Public keys by key id, and the verification of one request."""

    def __init__(self, skew_past_s: float = 10.0, skew_future_s: float = 60.0) -> None:
        self.skew_past_ms = int(skew_past_s * 1000)
        self.skew_future_ms = int(skew_future_s * 1000)
        self._keys: dict[str, PublicKey] = {}

    @classmethod
    def for_config(cls, config: SimConfig) -> KeyRegistry:
        """The dev key (made now if missing, of `--dev-key-type`) and every `--register-key`."""
        keys = cls(config.skew_past_s, config.skew_future_s)
        try:
            dev = ensure_dev_key(config.kalshi_home or kalshi_home(), config.dev_key_type)
        except KalshiConfigError as exc:
            raise ValueError(str(exc)) from None
        keys.register(dev.key_id, dev.public_key_pem(), source=f"dev key {dev.private_key_path}")
        for key_id, path in config.register_keys:
            keys.register_file(key_id, path)
        return keys

    def register(self, key_id: str, public_pem: bytes, *, source: str | None = None) -> None:
        """Accept requests signed for `key_id` by the private half of this Ed25519 or RSA key."""
        where = source or f"the public key for {key_id}"
        try:
            key = serialization.load_pem_public_key(public_pem)
        except (ValueError, UnsupportedAlgorithm):
            raise ValueError(
                f"{where} is not a PEM public key: give --register-key KEY_ID=PATH a public or "
                "private key PEM file"
            ) from None
        if not isinstance(key, ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
            raise ValueError(
                f"{where} is a key of type {describe_key_type(key)}; Kalshi API keys are "
                "Ed25519 or RSA: register the public key of an Ed25519 or RSA API key"
            )
        self._keys[key_id] = key

    def register_file(self, key_id: str, path: Path) -> None:
        """A public key PEM; an unencrypted private key PEM is accepted too (its public half)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"--register-key {key_id}={path}: {exc.strerror}") from None
        source = f"--register-key {key_id}={path}"
        if b"PRIVATE KEY" in data:
            try:
                private = serialization.load_pem_private_key(data, None)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise ValueError(
                    f"{source} is not a usable private key PEM (damaged, cut short or "
                    "encrypted): give the public key PEM instead"
                ) from None
            data = private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        self.register(key_id, data, source=source)

    def __contains__(self, key_id: str) -> bool:
        return key_id in self._keys

    def key_ids(self) -> list[str]:
        return list(self._keys)

    def verify(
        self, headers: Mapping[str, str], method: str, path: str, now_ms: int | None = None
    ) -> str | AuthFailure:
        """The key id when the request is signed correctly, else the failure to answer."""
        key_id = headers.get(HEADER_KEY)
        signature = headers.get(HEADER_SIGNATURE)
        timestamp = headers.get(HEADER_TIMESTAMP)
        if not signature:
            return AuthFailure(MISSING_SIGNATURE, "signature missing")
        if not key_id:
            return AuthFailure(MISSING_KEY, "key id missing")
        if not timestamp:
            return AuthFailure(MISSING_TIMESTAMP, "timestamp missing")
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        try:
            ts = int(timestamp)
        except ValueError:
            return AuthFailure(TIMESTAMP_EXPIRED, "timestamp not an integer")
        if not now_ms - self.skew_past_ms <= ts <= now_ms + self.skew_future_ms:
            return AuthFailure(TIMESTAMP_EXPIRED, f"timestamp {ts - now_ms:+d} ms from now")
        key = self._keys.get(key_id)
        if key is None:
            return AuthFailure(UNKNOWN_KEY, "unknown key id")
        message = signing_message(timestamp, method, path)
        try:
            raw = base64.b64decode(signature, validate=True)
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(raw, message)
            else:
                key.verify(raw, message, _PSS, hashes.SHA256())
        except (binascii.Error, ValueError, InvalidSignature):
            return AuthFailure(BAD_SIGNATURE, "signature does not verify")
        return key_id


def has_auth_headers(headers: Mapping[str, str]) -> bool:
    return any(h in headers for h in AUTH_HEADERS)

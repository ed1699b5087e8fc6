"""Helpers for the simulator tests: signing with a test key, WebSocket command round trips."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from websockets.asyncio.client import ClientConnection, connect

from kalshi_pipeline.kalshi.auth import HEADER_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP

WS_PATH = "/trade-api/ws/v2"
REST_PREFIX = "/trade-api/v2"
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
T = TypeVar("T")

BAD_SIGNATURE = {
    "error": {
        "code": "authentication_error",
        "message": "authentication_error",
        "details": "INCORRECT_API_KEY_SIGNATURE",
    }
}
UNKNOWN_KEY = {
    "error": {
        "code": "authentication_error",
        "message": "authentication_error",
        "details": "NOT_FOUND",
    }
}
MISSING_SIGNATURE = {
    "error": {
        "code": "signature_is_missing_from_headers",
        "message": "signature is missing from headers",
    }
}
TIMESTAMP_EXPIRED = {
    "error": {"code": "header_timestamp_expired", "message": "header timestamp expired"}
}


class TestSigner:
    """Signs as Kalshi's docs say, independently of the project's own client code: Ed25519 over
    the message, or RSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt), by the key's type."""

    __test__ = False

    def __init__(
        self, key_id: str, private_key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ) -> None:
        self.key_id = key_id
        self.key = private_key

    @classmethod
    def from_pem_file(cls, key_id: str, path: Path) -> TestSigner:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        assert isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey)
        return cls(key_id, key)

    @property
    def key_type(self) -> str:
        return "ed25519" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "rsa"

    def headers(
        self,
        method: str,
        path: str,
        *,
        skew_ms: int = 0,
        signed_path: str | None = None,
    ) -> dict[str, str]:
        ts = str(time.time_ns() // 1_000_000 + skew_ms)
        message = f"{ts}{method.upper()}{signed_path if signed_path is not None else path}"
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            signature = self.key.sign(message.encode())
        else:
            signature = self.key.sign(message.encode(), PSS, hashes.SHA256())
        return {
            HEADER_KEY: self.key_id,
            HEADER_TIMESTAMP: ts,
            HEADER_SIGNATURE: base64.b64encode(signature).decode(),
        }

    def ws_headers(self, **kwargs: Any) -> dict[str, str]:
        return self.headers("GET", WS_PATH, **kwargs)


async def ws_connect(ws_url: str, signer: TestSigner, **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("max_size", 2**24)
    kwargs.setdefault("compression", None)
    return await connect(ws_url, additional_headers=signer.ws_headers(), **kwargs)


async def recv(ws: ClientConnection, wait_s: float = 5.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), wait_s)
    assert isinstance(raw, str)
    assert raw.endswith("\n"), f"server text frames end with a newline: {raw!r}"
    body: dict[str, Any] = json.loads(raw)
    return body


async def recv_until(
    ws: ClientConnection,
    predicate: Callable[[dict[str, Any]], bool],
    wait_s: float = 5.0,
    what: str = "a matching frame",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read frames until one matches; returns it and every frame read before it."""
    deadline = time.monotonic() + wait_s
    before: list[dict[str, Any]] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {what} within {wait_s}s; got {before[-5:]!r}")
        try:
            frame = await recv(ws, left)
        except TimeoutError:
            continue
        if predicate(frame):
            return frame, before
        before.append(frame)


async def command(
    ws: ClientConnection, body: dict[str, Any] | str, wait_s: float = 5.0
) -> dict[str, Any]:
    """Send one command and return the first non-data response (ticker frames are skipped)."""
    await ws.send(body if isinstance(body, str) else json.dumps(body))
    frame, _ = await recv_until(
        ws,
        lambda f: f.get("type") not in ("ticker", "trade", "market_lifecycle_v2"),
        wait_s,
        "command response",
    )
    return frame


async def responses(
    ws: ClientConnection, body: dict[str, Any], count: int, wait_s: float = 5.0
) -> list[dict[str, Any]]:
    """Send one command and collect `count` non-data responses."""
    await ws.send(json.dumps(body))
    out = []
    for _ in range(count):
        frame, _ = await recv_until(
            ws,
            lambda f: f.get("type") not in ("ticker", "trade", "market_lifecycle_v2"),
            wait_s,
            "command response",
        )
        out.append(frame)
    return out


def error_code(frame: dict[str, Any]) -> int:
    assert frame["type"] == "error", frame
    code: int = frame["msg"]["code"]
    return code


def strip_emitted(line: dict[str, Any]) -> dict[str, Any]:
    out = dict(line)
    del out["emitted_at_ms"]
    return out


def expand(ranges: list[list[int]]) -> list[int]:
    return [i for first, last in ranges for i in range(first, last + 1)]

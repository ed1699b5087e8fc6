"""Helpers for the protocol layer's simulator tests: waiting with deadlines, and real signers
that make the mistakes clients make in the wild."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from kalshi_pipeline.kalshi.auth import HEADER_SIGNATURE, HEADER_TIMESTAMP, Signer
from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.keys import PrivateKey

T = TypeVar("T")

# The shared simulator's limits: low enough that errors 26 and 27 are reachable with a handful
# of commands.
MAX_MARKETS_PER_SUBSCRIPTION = 50
MAX_COMMANDS_PER_S = 30


@dataclass(frozen=True)
class ApiKey:
    """An API key the shared simulator knows: its id, private key and the file holding it."""

    key_type: str
    key_id: str
    private_key: PrivateKey
    path: Path


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async test body on a fresh event loop."""
    return asyncio.run(coro)


class ShiftedClockSigner:
    """A real signer whose clock is off by `offset_ms`: what a machine without NTP sends."""

    def __init__(self, signer: Signer, offset_ms: int) -> None:
        self.signer = signer
        self.offset_ms = offset_ms
        self.key_id = signer.key_id

    def headers(self, method: str, url: str, *, now_ms: int | None = None) -> dict[str, str]:
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        return self.signer.headers(method, url, now_ms=now + self.offset_ms)


class HeaderDroppingSigner:
    """A real signer that leaves one of the three headers out."""

    def __init__(self, signer: Signer, drop: str) -> None:
        self.signer = signer
        self.drop = drop
        self.key_id = signer.key_id

    def headers(self, method: str, url: str, *, now_ms: int | None = None) -> dict[str, str]:
        headers = self.signer.headers(method, url, now_ms=now_ms)
        headers.pop(self.drop)
        return headers


class QueryStringSigner:
    """A signer with the commonest signing mistake: the query string is signed too."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.key_id = signer.key_id

    def headers(self, method: str, url: str, *, now_ms: int | None = None) -> dict[str, str]:
        headers = self.signer.headers(method, url, now_ms=now_ms)
        parts = urlsplit(url)
        message = f"{headers[HEADER_TIMESTAMP]}{method.upper()}{parts.path}"
        if parts.query:
            message += f"?{parts.query}"
        headers[HEADER_SIGNATURE] = self.signer.sign(message.encode())
        return headers


def session_of(sim: SimulatorProcess, sessions_before: int) -> dict[str, Any]:
    """The simulator's record of the one connection opened after `sessions_before` existed."""
    sessions = sim.sessions()
    assert len(sessions) == sessions_before + 1, sessions[sessions_before:]
    return sessions[sessions_before]

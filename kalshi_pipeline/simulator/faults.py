"""Fault state, set by `POST /_sim/faults` or by flags at start.

A POST replaces the whole state: keys left out are off, so `{}` clears everything. Windows
(`silence_s`, `refuse_handshakes_s`, `http_429_s`, `http_5xx_s`) start when the POST arrives.
The one-shot actions (`drop_connections`, `channel_error`, `buffer_overflow`,
`subscription_error`) are carried out by the server at once and are not part of the state.
`subscription_error` (`{"channel": C, "code": N}`) sends error N unasked (no `id`) on every
subscription of channel C, with its `sid` and, on a sequenced channel, the next `seq` (Kalshi's
subscription-scoped errors carry both, kalshi-protocol.md §3.3); the subscription stays.
`paused_shards` pauses trading on some matching-engine shards, as a maintenance on one shard does
on Kalshi.

`drop_frames` and `reorder_frames` (`{"channel": C, "count": N}`) act on the next sequenced data
frames of channel C (`orderbook_delta`, `trade`, `market_lifecycle_v2`), whichever subscription
they are for: a dropped frame still takes its seq, so the client sees a gap; a reordered pair is
one frame held back and sent right after the next frame of the same subscription. The state
reports how many are still to come.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kalshi_pipeline.simulator.model import SHARDS

WINDOW_KEYS = ("silence_s", "refuse_handshakes_s", "http_429_s", "http_5xx_s")
ACTION_KEYS = ("drop_connections", "channel_error", "buffer_overflow", "subscription_error")
FAULT_KEYS = (
    *ACTION_KEYS,
    "drop_every_s",
    *WINDOW_KEYS,
    "silence_new_sockets",
    "malformed_rate",
    "slow_ms",
    "pause_updates",
    "paused_shards",
    "drop_frames",
    "reorder_frames",
)
FRAME_FAULT_CHANNELS = ("orderbook_delta", "trade", "market_lifecycle_v2")
SUBSCRIPTION_ERROR_CHANNELS = ("ticker", *FRAME_FAULT_CHANNELS)
# the errors `subscription_error` sends: not the terminal ones (10, 25), which end the
# subscription (`channel_error`, `buffer_overflow`)
SUBSCRIPTION_ERROR_CODES = (11, 14, 17, 18, 26, 27)
HTTP_5XX_STATUSES = (500, 502, 503)


class FaultError(ValueError):
    """A fault request the simulator cannot apply; the message says which key and why."""


@dataclass(frozen=True)
class FaultRequest:
    drop_connections: bool = False
    channel_error: bool = False
    buffer_overflow: bool = False
    drop_every_s: float | None = None
    silence_s: float | None = None
    silence_new_sockets: bool = False
    refuse_handshakes_s: float | None = None
    http_429_s: float | None = None
    http_5xx_s: float | None = None
    malformed_rate: float = 0.0
    slow_ms: float = 0.0
    pause_updates: bool = False
    paused_shards: frozenset[int] = frozenset()
    drop_frames: tuple[str, int] | None = None
    reorder_frames: tuple[str, int] | None = None
    subscription_error: tuple[str, int] | None = None


def _subscription_error(value: object) -> tuple[str, int] | None:
    """`{"channel": C, "code": N}` -> (C, N)."""
    if value is None:
        return None
    example = '{"channel": "orderbook_delta", "code": 14}'
    if not isinstance(value, dict) or set(value) != {"channel", "code"}:
        raise FaultError(f"subscription_error must be an object like {example}, got {value!r}")
    channel, code = value["channel"], value["code"]
    if channel not in SUBSCRIPTION_ERROR_CHANNELS:
        raise FaultError(
            f"subscription_error.channel must be one of {list(SUBSCRIPTION_ERROR_CHANNELS)}, "
            f"got {channel!r}"
        )
    if isinstance(code, bool) or code not in SUBSCRIPTION_ERROR_CODES:
        raise FaultError(
            f"subscription_error.code must be one of {list(SUBSCRIPTION_ERROR_CODES)} (10 and 25 "
            f"end the subscription: use channel_error or buffer_overflow), got {code!r}"
        )
    return (channel, code)


def _frames(key: str, value: object) -> tuple[str, int] | None:
    """`{"channel": C, "count": N}` (count defaults to 1) -> (C, N)."""
    if value is None:
        return None
    example = '{"channel": "orderbook_delta", "count": 1}'
    if not isinstance(value, dict) or set(value) - {"channel", "count"}:
        raise FaultError(f"{key} must be an object like {example}, got {value!r}")
    channel = value.get("channel")
    if channel not in FRAME_FAULT_CHANNELS:
        raise FaultError(
            f"{key}.channel must be one of {list(FRAME_FAULT_CHANNELS)} (the sequenced channels), "
            f"got {channel!r}"
        )
    count = value.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise FaultError(f"{key}.count must be a whole number >= 1, got {count!r}")
    return (channel, count)


def _seconds(key: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultError(f"{key} must be a number of seconds or null, got {value!r}")
    if value < 0:
        raise FaultError(f"{key} must be >= 0, got {value!r}")
    return float(value) or None


def _flag(key: str, value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise FaultError(f"{key} must be true or false, got {value!r}")
    return value


def _shards(value: object) -> frozenset[int]:
    if value is None:
        return frozenset()
    known = sorted(SHARDS)
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v in SHARDS for v in value
    ):
        raise FaultError(
            f"paused_shards must be a list of shard numbers (exchange_index) among {known}, "
            f"got {value!r}"
        )
    return frozenset(value)


def parse_faults(body: object) -> FaultRequest:
    """Validate a fault request body (a JSON object)."""
    if not isinstance(body, dict):
        raise FaultError("the body must be a JSON object")
    unknown = sorted(set(body) - set(FAULT_KEYS))
    if unknown:
        raise FaultError(f"unknown fault keys {unknown}; known: {sorted(FAULT_KEYS)}")
    rate = body.get("malformed_rate") or 0.0
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        raise FaultError(f"malformed_rate must be a number in [0, 1], got {rate!r}")
    slow = _seconds("slow_ms", body.get("slow_ms")) or 0.0
    return FaultRequest(
        drop_connections=_flag("drop_connections", body.get("drop_connections")),
        channel_error=_flag("channel_error", body.get("channel_error")),
        buffer_overflow=_flag("buffer_overflow", body.get("buffer_overflow")),
        drop_every_s=_seconds("drop_every_s", body.get("drop_every_s")),
        silence_s=_seconds("silence_s", body.get("silence_s")),
        silence_new_sockets=_flag("silence_new_sockets", body.get("silence_new_sockets")),
        refuse_handshakes_s=_seconds("refuse_handshakes_s", body.get("refuse_handshakes_s")),
        http_429_s=_seconds("http_429_s", body.get("http_429_s")),
        http_5xx_s=_seconds("http_5xx_s", body.get("http_5xx_s")),
        malformed_rate=float(rate),
        slow_ms=slow,
        pause_updates=_flag("pause_updates", body.get("pause_updates")),
        paused_shards=_shards(body.get("paused_shards")),
        drop_frames=_frames("drop_frames", body.get("drop_frames")),
        reorder_frames=_frames("reorder_frames", body.get("reorder_frames")),
        subscription_error=_subscription_error(body.get("subscription_error")),
    )


class Faults:
    """The current faults; times are on the monotonic clock."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, seed: int | None = None
    ) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self.drop_every_s: float | None = None
        self.next_drop_at = math.inf
        self.silence_from = 0.0
        self.silence_until = 0.0
        self.silence_new_sockets = False
        self.refuse_until = 0.0
        self.http_429_until = 0.0
        self.http_5xx_until = 0.0
        self.malformed_rate = 0.0
        self.slow_ms = 0.0
        self.pause_updates = False  # tests freeze the market state to compare final states
        self.paused_shards: frozenset[int] = frozenset()
        self.drop_frames: dict[str, int] = {}
        self.reorder_frames: dict[str, int] = {}
        self._5xx_turn = 0

    def apply(self, req: FaultRequest) -> None:
        now = self.clock()
        self.drop_every_s = req.drop_every_s
        self.next_drop_at = now + req.drop_every_s if req.drop_every_s else math.inf
        self.silence_from = now
        self.silence_until = now + req.silence_s if req.silence_s else 0.0
        self.silence_new_sockets = req.silence_new_sockets
        self.refuse_until = now + req.refuse_handshakes_s if req.refuse_handshakes_s else 0.0
        self.http_429_until = now + req.http_429_s if req.http_429_s else 0.0
        self.http_5xx_until = now + req.http_5xx_s if req.http_5xx_s else 0.0
        self.malformed_rate = req.malformed_rate
        self.slow_ms = req.slow_ms
        self.pause_updates = req.pause_updates
        self.paused_shards = req.paused_shards
        self.drop_frames = dict([req.drop_frames]) if req.drop_frames else {}
        self.reorder_frames = dict([req.reorder_frames]) if req.reorder_frames else {}

    def take_drop(self, channel: str) -> bool:
        """True if the next frame of `channel` is to be dropped (and counts it)."""
        return _take(self.drop_frames, channel)

    def take_reorder(self, channel: str) -> bool:
        """True if the next frame of `channel` is to be held back behind the one after it."""
        return _take(self.reorder_frames, channel)

    def silenced(self, opened_at: float) -> bool:
        """Whether a socket opened at `opened_at` (monotonic) must send nothing right now."""
        if self.silence_until == 0.0:
            return False
        now = self.clock()
        if now >= self.silence_until:
            self.silence_until = 0.0
            return False
        return opened_at <= self.silence_from or self.silence_new_sockets

    def refusing_handshakes(self) -> bool:
        return self.clock() < self.refuse_until

    def http_429(self) -> bool:
        return self.clock() < self.http_429_until

    def http_5xx_status(self) -> int | None:
        """The status to fail the next REST request with, cycling 500, 502, 503; or None."""
        if self.clock() >= self.http_5xx_until:
            return None
        status = HTTP_5XX_STATUSES[self._5xx_turn % len(HTTP_5XX_STATUSES)]
        self._5xx_turn += 1
        return status

    def malformed_now(self) -> bool:
        return self.malformed_rate > 0.0 and self.rng.random() < self.malformed_rate

    def drop_due(self) -> bool:
        """True once per `drop_every_s` period."""
        if self.drop_every_s is None:
            return False
        now = self.clock()
        if now < self.next_drop_at:
            return False
        self.next_drop_at = now + self.drop_every_s
        return True

    def state(self) -> dict[str, Any]:
        now = self.clock()

        def left(until: float) -> float | None:
            return round(until - now, 3) if until > now else None

        return {
            "drop_every_s": self.drop_every_s,
            "silence_s": left(self.silence_until),
            "silence_new_sockets": self.silence_new_sockets,
            "refuse_handshakes_s": left(self.refuse_until),
            "http_429_s": left(self.http_429_until),
            "http_5xx_s": left(self.http_5xx_until),
            "malformed_rate": self.malformed_rate,
            "slow_ms": self.slow_ms,
            "pause_updates": self.pause_updates,
            "paused_shards": sorted(self.paused_shards),
            "drop_frames": _pending(self.drop_frames),
            "reorder_frames": _pending(self.reorder_frames),
        }


def _take(pending: dict[str, int], channel: str) -> bool:
    left = pending.get(channel)
    if not left:
        return False
    if left == 1:
        del pending[channel]
    else:
        pending[channel] = left - 1
    return True


def _pending(pending: dict[str, int]) -> dict[str, Any] | None:
    for channel, count in pending.items():
        return {"channel": channel, "count": count}
    return None

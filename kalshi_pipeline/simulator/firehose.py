"""Firehose mode: N ticker frames encoded at start and sent to each new ticker subscription.

The frames move the markets of a dedicated series (`KXSIMFIRE`, at most 1,000 markets, taken out
of the `--markets` budget) that the Poisson process never touches, so the model ends in the state
of each market's last firehose frame and REST agrees with it. Each frame is a ledger line,
written at start; its `emitted_at_ms` is that start time. Its `ts_ms` values run up to the start
time, 1 ms apart, so no two frames of one market share a timestamp. Their `sending_ts_ms` is a
fixed-width placeholder replaced by the time of sending, chunk by chunk.
"""

from __future__ import annotations

import random

from kalshi_pipeline.simulator.book import step
from kalshi_pipeline.simulator.ledger import Ledger
from kalshi_pipeline.simulator.model import encode_ticker
from kalshi_pipeline.simulator.universe import Builder

MAX_FIREHOSE_MARKETS = 1000


def firehose_market_count(frames: int, markets: int) -> int:
    """How many of the `--markets` the firehose moves: up to 1,000, at most half of them."""
    if frames <= 0:
        return 0
    return max(1, min(frames, MAX_FIREHOSE_MARKETS, markets // 2))


SID1_PREFIX = b'{"type":"ticker","sid":1,"msg":'
_UNSTAMPED = b'"sending_ts_ms":0000000000000}'
"""13 digits: the width of every millisecond timestamp until the year 2286, so stamping a frame
never changes its length (nor its WebSocket header)."""


def ws_text_header(length: int) -> bytes:
    """RFC 6455 header of an unmasked, final text frame (server to client)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


class Firehose:
    def __init__(self) -> None:
        self.tickers: list[str] = []
        self.raw: list[bytes] = []
        """Whole WebSocket frames (header included) for sid 1, the usual first subscription,
        so the hot loop can hand hundreds of them to the transport in one write."""
        self.first_index = 0

    def __len__(self) -> int:
        return len(self.raw)

    def build(
        self,
        builder: Builder,
        ledger: Ledger,
        rng: random.Random,
        n: int,
        market_count: int,
        now_us: int,
    ) -> None:
        if n <= 0:
            return
        markets = builder.firehose_markets(max(1, market_count), now_us)
        emitted_ms = now_us // 1000
        self.first_index = ledger.count
        tickers = self.tickers
        raw = self.raw
        for i in range(n):
            m = markets[i % len(markets)] if i < len(markets) else rng.choice(markets)
            step(m.quote, rng, deep_mean=0)  # ticker frames only: no deep-book changes
            msg = encode_ticker(m.market_id, m.ticker, m.quote, now_us - (n - 1 - i) * 1000)
            m.msg = msg
            m.msg_index = ledger.append(msg, emitted_ms)
            tickers.append(m.ticker)
            payload = SID1_PREFIX + msg + b"," + _UNSTAMPED + b"\n"
            raw.append(ws_text_header(len(payload)) + payload)

    @staticmethod
    def stamp(frames: bytes, sending_ts_ms: int) -> bytes:
        """Frames (one or many, joined) with their `sending_ts_ms` set."""
        return frames.replace(_UNSTAMPED, b'"sending_ts_ms":%013d}' % sending_ts_ms)

    def frame_for(self, i: int, prefix: bytes, sending_ts_ms: int) -> bytes:
        """The text payload of frame i for the subscription whose frames start with `prefix`."""
        frame = self.raw[i]
        header = 2 if frame[1] < 126 else 4 if frame[1] == 126 else 10
        return self.stamp(prefix + frame[header + len(SID1_PREFIX) :], sending_ts_ms)

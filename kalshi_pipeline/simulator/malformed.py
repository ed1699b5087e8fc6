"""Extra frames for the `malformed_rate` fault: each is sent after a real ticker frame, never
instead of one, and none is a ledger line."""

from __future__ import annotations

import random


def malformed_frame(rng: random.Random, real: bytes) -> bytes:
    """One of: invalid JSON, truncated JSON, a ticker with wrong field types, an unknown type."""
    kind = rng.randrange(4)
    if kind == 0:
        return b'{"type":"ticker","sid":1,"msg":{"market_ticker":"KXSIMBAD",,"ts":}}\n'
    if kind == 1:
        body = real.rstrip(b"\n")
        return body[: max(1, len(body) // 2)] + b"\n"
    if kind == 2:
        return (
            b'{"type":"ticker","sid":1,"msg":{"market_id":7,"market_ticker":12345,'
            b'"price_dollars":["0.50"],"yes_bid_dollars":{"v":1},"yes_ask_dollars":true,'
            b'"volume_fp":-1,"ts":"soon","ts_ms":"later","time":42}}\n'
        )
    return b'{"type":"sim_unknown_type","sid":1,"msg":{"note":"not a Kalshi message type"}}\n'

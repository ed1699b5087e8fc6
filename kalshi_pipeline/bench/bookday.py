"""A synthetic day of order-book frames, written to a landing log as the feed would land them.

The books move with the simulator's own order flow (`simulator.book.step`: deep changes and
one L1 change per step, trades taking levels), encoded with the simulator's own frame payloads,
so prices, sizes and frame sizes are what the stream stores from the simulator. One engine, one
connection: a `connect` feed event, a snapshot of every market (sid 1, seq 1..N), then deltas on
the same sid, numbered on, at times spread over the day (exponential gaps, markets chosen with
Zipf-like weights: a few busy markets, many quiet ones). The frames carry the synthetic day's
times as their receive times, so the warehouse holds a day of deltas however fast it was made.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path

import msgspec

from kalshi_pipeline.simulator.book import Quote, initial_quote, step
from kalshi_pipeline.simulator.orderbook import delta_msg, snapshot_msg
from kalshi_pipeline.stream.landing import Kind, LandingLog, Source

SID = 1
DAY_S = 86_400.0
_EVENT = msgspec.json.Encoder()


@dataclass(frozen=True)
class Day:
    markets: list[str]
    start_ns: int
    end_ns: int
    snapshots: int
    deltas: int
    frame_bytes: int


def tickers(markets: int) -> list[str]:
    return [f"KXBOOKDAY-26NOV27-M{i:04d}" for i in range(markets)]


def write_day(
    folder: Path,
    *,
    markets: int,
    deltas: int,
    start_ns: int,
    seconds: float = DAY_S,
    seed: int = 7,
) -> Day:
    """Land a day of `deltas` order-book deltas over `markets` markets in `folder`."""
    rng = random.Random(seed)
    names = tickers(markets)
    quotes: list[Quote] = [initial_quote(rng, rng.randint(5, 95), traded=True) for _ in names]
    cum: list[float] = list(itertools.accumulate(1.0 / (i + 1) ** 0.8 for i in range(markets)))
    order = range(markets)
    landing = LandingLog(folder)
    frame_bytes = 0
    seq = 0
    try:
        landing.append(
            Kind.FEED_EVENT,
            Source.WEBSOCKET,
            _EVENT.encode({"kind": "connect", "detail": "synthetic day"}),
            start_ns,
        )
        t_ns = start_ns + 1_000_000
        for name, q in zip(names, quotes, strict=True):
            seq += 1
            frame = (
                b'{"type":"orderbook_snapshot","sid":%d,"seq":%d,"msg":%s,"sending_ts_ms":%d}'
                % (
                    SID,
                    seq,
                    snapshot_msg(name, "", q.book, False),
                    t_ns // 1_000_000,
                )
            )
            landing.append(Kind.WS_FRAME, Source.WEBSOCKET, frame, t_ns)
            frame_bytes += len(frame)
            t_ns += 20_000
        # steps make about 2.5 deltas each: draw gaps per delta so the day ends near `seconds`
        mean_gap_ns = seconds * 1e9 / max(1, deltas)
        made = 0
        while made < deltas:
            i = rng.choices(order, cum_weights=cum)[0]
            change = step(quotes[i], rng)
            for d in change.deltas:
                t_ns += int(rng.expovariate(1.0 / mean_gap_ns)) + 1
                seq += 1
                msg = delta_msg(names[i], "", d, t_ns // 1000, False)
                frame = (
                    b'{"type":"orderbook_delta","sid":%d,"seq":%d,"msg":%s,"sending_ts_ms":%d}'
                    % (
                        SID,
                        seq,
                        msg,
                        t_ns // 1_000_000,
                    )
                )
                # received a little later: 0.3 ms on loopback plus a few ms of jitter
                received_ns = t_ns + 300_000 + int(rng.expovariate(1 / 2e6))
                landing.append(Kind.WS_FRAME, Source.WEBSOCKET, frame, received_ns)
                frame_bytes += len(frame)
                made += 1
    finally:
        landing.close()
    return Day(names, start_ns, t_ns, markets, made, frame_bytes)

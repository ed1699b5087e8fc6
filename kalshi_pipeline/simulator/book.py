"""A market's top of book and how it moves: quote shifts, size changes, trades.

Invariants every step keeps: 0 <= bid < ask <= 100 cents on the 1-cent grid (linear_cent), a bid of
0 means no bid and an ask of 100 means no ask (both with size 0), volume and open interest never
decrease, and every step changes at least one ticker field.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NO_BID = 0
NO_ASK = 100


@dataclass(slots=True)
class Quote:
    bid: int
    ask: int
    bid_size: int
    ask_size: int
    last: int
    last_size: int
    volume: int
    oi: int

    def l1(self) -> tuple[int, int, int, int]:
        return (self.bid, self.ask, self.bid_size, self.ask_size)

    def copy(self) -> Quote:
        return Quote(
            self.bid, self.ask, self.bid_size, self.ask_size,
            self.last, self.last_size, self.volume, self.oi,
        )  # fmt: skip


@dataclass(slots=True, frozen=True)
class Fill:
    price: int
    size: int
    taker_bought_yes: bool


def level_size(rng: random.Random) -> int:
    """Resting size in hundredths of a contract; some fractional, as fractional trading allows."""
    size = rng.randint(1, 500) * 100
    if rng.random() < 0.1:
        size += rng.randint(1, 99)
    return size


def trade_size(rng: random.Random) -> int:
    size = rng.randint(1, 40) * 100
    if rng.random() < 0.1:
        size = rng.randint(1, 99) if rng.random() < 0.3 else size + rng.randint(1, 99)
    return size


def initial_quote(rng: random.Random, fair: int, traded: bool) -> Quote:
    """A plausible opening book around `fair` cents; `traded` markets come with history."""
    fair = min(max(fair, 2), 98)
    bid = min(max(fair - rng.randint(0, 2), 1), 97)
    ask = min(bid + rng.randint(1, 3), 99)
    if not traded:
        return Quote(bid, ask, level_size(rng), level_size(rng), 0, 0, 0, 0)
    volume = rng.randint(1, 200_000) * 100
    oi = rng.randint(0, volume // 100) * 100
    last = min(max(fair + rng.randint(-1, 1), 1), 99)
    return Quote(bid, ask, level_size(rng), level_size(rng), last, trade_size(rng), volume, oi)


def step(q: Quote, rng: random.Random) -> Fill | None:
    """Move the book once; returns the trade if this step was one."""
    before = q.l1()
    if (q.bid == NO_BID or q.ask == NO_ASK) and rng.random() < 0.5:
        _refill(q, rng)
        return None
    r = rng.random()
    fill = None
    if r < 0.3:
        fill = _trade(q, rng)
    elif r < 0.6:
        _move(q, rng)
    elif r < 0.997:
        _resize(q, rng)
    else:
        _empty_side(q, rng)
    if fill is None and q.l1() == before:
        _resize(q, rng)
    return fill


def _trade(q: Quote, rng: random.Random) -> Fill | None:
    sides = []
    if q.ask != NO_ASK:
        sides.append(True)
    if q.bid != NO_BID:
        sides.append(False)
    if not sides:
        _refill(q, rng)
        return None
    buy = rng.choice(sides)
    if buy:
        price = q.ask
        size = min(trade_size(rng), q.ask_size)
        q.ask_size -= size
        if q.ask_size == 0:
            # The level is exhausted; the next offer up takes its place.
            q.ask = q.ask + 1 if q.ask < 99 else NO_ASK
            q.ask_size = level_size(rng) if q.ask != NO_ASK else 0
    else:
        price = q.bid
        size = min(trade_size(rng), q.bid_size)
        q.bid_size -= size
        if q.bid_size == 0:
            q.bid = q.bid - 1 if q.bid > 1 else NO_BID
            q.bid_size = level_size(rng) if q.bid != NO_BID else 0
    q.volume += size
    q.oi += rng.randint(0, size)
    q.last = price
    q.last_size = size
    return Fill(price, size, buy)


def _move(q: Quote, rng: random.Random) -> None:
    if q.bid == NO_BID or q.ask == NO_ASK:
        _refill(q, rng)
        return
    d = rng.choice((-1, 1))
    kind = rng.randrange(3)
    if kind == 0 and q.bid + d >= 1 and q.ask + d <= 99:
        q.bid += d
        q.ask += d
        q.bid_size = level_size(rng)
        q.ask_size = level_size(rng)
    elif kind == 1 and 1 <= q.bid + d < q.ask:
        q.bid += d
        q.bid_size = level_size(rng)
    elif q.bid < q.ask + d <= 99:
        q.ask += d
        q.ask_size = level_size(rng)
    else:
        _resize(q, rng)


def _resize(q: Quote, rng: random.Random) -> None:
    sides = []
    if q.bid != NO_BID:
        sides.append(True)
    if q.ask != NO_ASK:
        sides.append(False)
    if not sides:
        _refill(q, rng)
        return
    if rng.choice(sides):
        old = q.bid_size
        while q.bid_size == old:
            q.bid_size = level_size(rng)
    else:
        old = q.ask_size
        while q.ask_size == old:
            q.ask_size = level_size(rng)


def _empty_side(q: Quote, rng: random.Random) -> None:
    if q.bid == NO_BID or q.ask == NO_ASK:
        _resize(q, rng)
    elif rng.random() < 0.5:
        q.bid, q.bid_size = NO_BID, 0
    else:
        q.ask, q.ask_size = NO_ASK, 0


def _refill(q: Quote, rng: random.Random) -> None:
    if q.bid == NO_BID and q.ask == NO_ASK:
        mid = q.last if 2 <= q.last <= 98 else 50
        q.bid, q.ask = mid - 1, mid + 1
        q.bid_size, q.ask_size = level_size(rng), level_size(rng)
    elif q.bid == NO_BID:
        if q.ask == 1:
            q.ask, q.ask_size = rng.randint(2, 4), level_size(rng)
        q.bid = max(1, q.ask - rng.randint(1, 3))
        q.bid_size = level_size(rng)
    elif q.ask == NO_ASK:
        if q.bid == 99:
            q.bid, q.bid_size = rng.randint(96, 98), level_size(rng)
        q.ask = min(99, q.bid + rng.randint(1, 3))
        q.ask_size = level_size(rng)
    else:
        _resize(q, rng)

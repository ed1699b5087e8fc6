"""A market's order book and the order flow that moves it: resting orders added and cancelled,
marketable orders matched against the best levels, one trade per level they take.

A binary market's book is two lists of bids, as Kalshi shows it (kalshi-protocol.md §3.8, §4.4):
YES bids at YES prices and NO bids at NO prices; a NO bid at n cents is a YES offer at 100 - n. So
the ticker's L1 is always derived from the book: yes_bid = the best YES bid, yes_ask = 100 - the
best NO bid (`"1.0000"` when there is no NO bid), sizes those levels' sizes.

Prices are integer cents on the 1-cent grid (linear_cent), sizes integer hundredths of a contract.
Invariants every step keeps: both sides' levels lie in 1..99 with positive sizes, the book never
crosses (best YES + best NO < 100, i.e. bid < ask), volume is the sum of every fill, open
interest stays within 0..volume, and every step changes at least one ticker field, so each step
is one ticker update (the `--rate` the simulator is started with keeps its meaning). Before that
ticker-visible change a step may carry a few changes deeper in the book, which only the order
book shows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

NO_BID = 0
NO_ASK = 100
YES = "yes"
NO = "no"
MAX_LEVELS = 25
"""Levels per side; the flow cancels deep orders rather than grow past it."""
DEEP_EVENTS_MEAN = 1.5
"""Mean number of order-book changes away from the L1 before each ticker-visible change: the
protocol notes estimate order-book deltas at several times the ticker rate."""


@dataclass(slots=True)
class Book:
    """Resting bids by price: `yes[c]` YES bids at c cents, `no[c]` NO bids at c cents (NO leg)."""

    yes: dict[int, int] = field(default_factory=dict)
    no: dict[int, int] = field(default_factory=dict)

    def copy(self) -> Book:
        return Book(dict(self.yes), dict(self.no))

    def side(self, side: str) -> dict[int, int]:
        return self.yes if side == YES else self.no

    def best(self, side: str) -> int:
        levels = self.yes if side == YES else self.no
        return max(levels) if levels else 0

    def levels(self, side: str) -> list[tuple[int, int]]:
        """(price, size) ascending by price, so the best bid is last (as REST shows it)."""
        return sorted((self.yes if side == YES else self.no).items())

    def apply(self, side: str, price: int, d: int) -> None:
        """Change one level by `d`; a level that reaches 0 goes, one below 0 is our bug."""
        levels = self.side(side)
        size = levels.get(price, 0) + d
        if size < 0:
            raise AssertionError(f"book level {side} {price} would go negative")
        if size:
            levels[price] = size
        else:
            del levels[price]


Delta = tuple[str, int, int]
"""(side, price in cents on that side's own leg, signed size change in hundredths)."""


@dataclass(slots=True)
class Quote:
    """The market's ticker state: L1 (always the book's best levels), last trade, totals."""

    bid: int
    ask: int
    bid_size: int
    ask_size: int
    last: int
    last_size: int
    volume: int
    oi: int
    book: Book = field(default_factory=Book)

    def l1(self) -> tuple[int, int, int, int]:
        return (self.bid, self.ask, self.bid_size, self.ask_size)

    def copy(self) -> Quote:
        return Quote(
            self.bid, self.ask, self.bid_size, self.ask_size,
            self.last, self.last_size, self.volume, self.oi, self.book.copy(),
        )  # fmt: skip

    def sync(self) -> None:
        """Set the L1 fields from the book."""
        b = self.book
        self.bid = b.best(YES)
        self.bid_size = b.yes[self.bid] if self.bid else 0
        best_no = b.best(NO)
        self.ask = 100 - best_no if best_no else NO_ASK
        self.ask_size = b.no[best_no] if best_no else 0


@dataclass(slots=True, frozen=True)
class Fill:
    price: int
    """YES price in cents."""
    size: int
    taker_bought_yes: bool


@dataclass(slots=True)
class Change:
    """What one step did: the book deltas in order, then the trades (one per level taken)."""

    deltas: list[Delta] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)


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


def _ladder(rng: random.Random, best: int, levels: dict[int, int]) -> None:
    """A few levels at and below `best` cents, with occasional gaps."""
    price = best
    for _ in range(rng.randint(3, 10)):
        if price < 1:
            break
        levels[price] = level_size(rng)
        price -= 1 + (rng.random() < 0.3)


def initial_quote(rng: random.Random, fair: int, traded: bool) -> Quote:
    """A plausible opening book around `fair` cents; `traded` markets come with history."""
    fair = min(max(fair, 2), 98)
    bid = min(max(fair - rng.randint(0, 2), 1), 97)
    ask = min(bid + rng.randint(1, 3), 99)
    book = Book()
    _ladder(rng, bid, book.yes)
    _ladder(rng, 100 - ask, book.no)
    q = Quote(0, NO_ASK, 0, 0, 0, 0, 0, 0, book)
    q.sync()
    if traded:
        q.volume = rng.randint(1, 200_000) * 100
        q.oi = rng.randint(0, q.volume // 100) * 100
        q.last = min(max(fair + rng.randint(-1, 1), 1), 99)
        q.last_size = trade_size(rng)
    return q


def diff(before: Book, after: Book) -> list[Delta]:
    """The deltas that turn `before` into `after` (a book replaced wholesale, e.g. at open)."""
    out: list[Delta] = []
    for side in (YES, NO):
        old, new = before.side(side), after.side(side)
        for price in sorted(old.keys() | new.keys()):
            d = new.get(price, 0) - old.get(price, 0)
            if d:
                out.append((side, price, d))
    return out


class _Flow:
    """One step's order flow on one quote; every book change goes through `_change`."""

    __slots__ = ("book", "change", "q", "rng")

    def __init__(self, q: Quote, rng: random.Random) -> None:
        self.q = q
        self.book = q.book
        self.rng = rng
        self.change = Change()

    def _change(self, side: str, price: int, d: int) -> None:
        self.book.apply(side, price, d)
        self.change.deltas.append((side, price, d))

    # Away from the L1: only the order book sees these.

    def deep(self) -> None:
        rng = self.rng
        side = YES if rng.random() < 0.5 else NO
        levels = self.book.side(side)
        best = self.book.best(side)
        if not best:
            return
        deeper = [p for p in levels if p != best]
        if deeper and (len(levels) >= MAX_LEVELS or rng.random() < 0.45):
            price = rng.choice(deeper)
            size = levels[price]
            cut = size if rng.random() < 0.5 else rng.randint(1, size)
            self._change(side, price, -cut)
        else:
            price = best - rng.randint(1, 8)
            if price >= 1:
                self._change(side, price, level_size(rng))

    # At the L1: each of these changes a ticker field.

    def trade(self) -> bool:
        """A marketable order: takes the best opposite level, sometimes walks further; returns
        False if there was nothing to take."""
        rng, book, q = self.rng, self.book, self.q
        sides = [s for s in (True, False) if book.best(NO if s else YES)]
        if not sides:
            return False
        bought_yes = rng.choice(sides)
        maker = NO if bought_yes else YES
        wanted = trade_size(rng)
        while wanted > 0:
            best = book.best(maker)
            if not best:
                break
            size = min(wanted, book.side(maker)[best])
            self._change(maker, best, -size)
            price = 100 - best if bought_yes else best
            self.change.fills.append(Fill(price, size, bought_yes))
            q.volume += size
            q.last, q.last_size = price, size
            # Open interest: both sides open positions (+size), one opens as the other closes
            # (no change), or both close (-size); never below zero.
            r = rng.random()
            if r < 0.55:
                q.oi += size
            elif r > 0.85:
                q.oi -= min(size, q.oi)
            wanted -= size
            if rng.random() < 0.7:
                break  # a limit price that stops at this level; the rest is cancelled
        return True

    def move(self) -> bool:
        """Improve one side inside the spread, or pull that side's best level."""
        rng, book, q = self.rng, self.book, self.q
        if not q.bid or q.ask == NO_ASK:
            return False
        side = YES if rng.random() < 0.5 else NO
        best = book.best(side)
        spread = q.ask - q.bid
        # a wide spread draws orders inside it, so spreads stay a few cents as on busy markets
        if spread > 1 and rng.random() < (0.5 if spread <= 3 else 0.85):
            self._change(side, best + 1, level_size(rng))
        elif len(book.side(side)) > 1:
            self._change(side, best, -book.side(side)[best])
        else:
            return False
        return True

    def resize(self) -> bool:
        """Join or partly cancel the best level of one side."""
        rng, book = self.rng, self.book
        sides = [s for s in (YES, NO) if book.best(s)]
        if not sides:
            return False
        side = rng.choice(sides)
        best = book.best(side)
        size = book.side(side)[best]
        if size > 1 and rng.random() < 0.5:
            self._change(side, best, -rng.randint(1, size - 1))
        else:
            self._change(side, best, level_size(rng))
        return True

    def empty_side(self) -> bool:
        """Every order on one side cancelled (rare): the book shows a missing bid or ask."""
        book = self.book
        sides = [s for s in (YES, NO) if book.best(s)]
        if len(sides) < 2:
            return False
        side = self.rng.choice(sides)
        for price, size in book.levels(side):
            self._change(side, price, -size)
        return True

    def refill(self) -> None:
        """Orders arrive on an empty side (or an empty book), never crossing the other side."""
        rng, book, q = self.rng, self.book, self.q
        if not book.yes and not book.no:
            mid = q.last if 2 <= q.last <= 98 else 50
            self._change(YES, mid - 1, level_size(rng))
            self._change(NO, 100 - mid - 1, level_size(rng))
        elif not book.yes:
            top = 100 - book.best(NO) - 1  # highest YES bid below the ask
            if top < 1:
                self._change(NO, book.best(NO), -book.no[book.best(NO)])
                if not book.no:
                    self._change(NO, rng.randint(96, 98), level_size(rng))
                top = 100 - book.best(NO) - 1
            self._change(YES, max(1, top - rng.randint(0, 2)), level_size(rng))
        else:
            top = 100 - book.best(YES) - 1
            if top < 1:
                self._change(YES, book.best(YES), -book.yes[book.best(YES)])
                if not book.yes:
                    self._change(YES, rng.randint(96, 98), level_size(rng))
                top = 100 - book.best(YES) - 1
            self._change(NO, max(1, top - rng.randint(0, 2)), level_size(rng))


def step(q: Quote, rng: random.Random, deep_mean: float = DEEP_EVENTS_MEAN) -> Change:
    """Move the book once: a few deep changes, then one change the ticker shows."""
    flow = _Flow(q, rng)
    if deep_mean > 0:
        p = 1.0 / (1.0 + deep_mean)  # geometric count with mean deep_mean
        while rng.random() >= p:
            flow.deep()
    before = q.l1()
    volume = q.volume
    if (not q.book.yes or not q.book.no) and rng.random() < 0.5:
        flow.refill()
    else:
        r = rng.random()
        done = (
            flow.trade()
            if r < 0.3
            else flow.move()
            if r < 0.6
            else flow.resize()
            if r < 0.997
            else flow.empty_side()
        )
        if not done:
            if not q.book.yes or not q.book.no:
                flow.refill()
            else:
                flow.resize()
    q.sync()
    if q.l1() == before and q.volume == volume:
        flow.resize()  # a refill can land where a level was just pulled; change something
        q.sync()
    return flow.change

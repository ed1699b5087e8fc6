"""Order-book firehose mode: N `orderbook_delta` msgs built at start and sent, as fast as the
socket takes them, to every order-book subscription once it covers all their markets.

The msgs move the books of a dedicated series (`KXSIMBOOK`, at most 500 markets, taken out of the
`--markets` budget) that the Poisson process never touches. Each market's deltas walk its book
away from its opening state and then back (every change undone, in reverse order), so every
intermediate book is a valid one (no negative level, never crossed) and the last delta leaves
the book exactly as REST shows it. That is what keeps a replay to each new subscription honest:
the `orderbook_snapshot` a subscription gets first is the book as it is, the deltas that follow
start from it, and after the last one the client's book is REST's again. A market with an odd
number of deltas has its first change (an added order) split in two.

The markets' deltas are interleaved at random (each market's own order kept). Every msg is a
book-ledger line, written at start after a snapshot line of its market's opening book; its
`emitted_at_ms` is that start time. Their `ts_ms` values run up to the start time, 1 ms apart, as
the ticker firehose's do. `sid`, `seq` and `sending_ts_ms` are set when a frame is sent: the
seqs are reserved on the subscription's counter when the firehose is queued, so frames queued
after it (acks, live deltas of other markets) number after it, as they are sent after it.
"""

from __future__ import annotations

import random

from kalshi_pipeline.simulator.book import NO, YES, Book, Delta, level_size
from kalshi_pipeline.simulator.ledger import Ledger
from kalshi_pipeline.simulator.model import Market
from kalshi_pipeline.simulator.orderbook import delta_msg, snapshot_msg
from kalshi_pipeline.simulator.universe import BOOK_FIREHOSE_SERIES, Builder

MAX_BOOK_FIREHOSE_MARKETS = 500


class BookFirehoseError(ValueError):
    """An order-book firehose that cannot be built as asked."""


def book_firehose_market_count(frames: int, markets: int) -> int:
    """How many of the `--markets` the order-book firehose moves: up to 500, at most half of
    them, and never more than half the frames (each market needs a change and its undoing)."""
    if frames <= 0:
        return 0
    return max(1, min(frames // 2, MAX_BOOK_FIREHOSE_MARKETS, markets // 2))


def _change(book: Book, rng: random.Random, add_only: bool) -> Delta:
    """One random change of a valid book that leaves it valid: an order added at or a little
    below the best bid of one side (never crossing the other side), or part or all of a
    level cancelled."""
    side = YES if rng.random() < 0.5 else NO
    levels = book.side(side)
    if levels and not add_only and rng.random() < 0.45:
        price = rng.choice(list(levels))
        size = levels[price]
        return (side, price, -(size if rng.random() < 0.3 else rng.randint(1, size)))
    top = 99 - book.best(NO if side == YES else YES)  # the highest bid that does not cross
    if top < 1:  # the other side bids 99: only this side's other leg can take an order
        side = NO if side == YES else YES
        top = 99 - book.best(NO if side == YES else YES)
    best = book.best(side) or top
    price = max(1, min(top, best + 1 - rng.randint(0, 6)))
    return (side, price, level_size(rng))


def market_deltas(book: Book, count: int, rng: random.Random) -> list[Delta]:
    """`count` (>= 2) deltas that move a copy of `book` and bring it back where it started."""
    if count < 2:
        raise BookFirehoseError(f"a market needs at least 2 firehose deltas, got {count}")
    work = book.copy()
    forward: list[Delta] = []
    for j in range(count // 2):
        d = _change(work, rng, add_only=j == 0)
        work.apply(*d)
        forward.append(d)
    back = [(side, price, -d) for side, price, d in reversed(forward)]
    if count % 2:  # the first change, an added order, arrives in two parts
        side, price, d = forward[0]
        part = rng.randint(1, d - 1)
        forward[0:1] = [(side, price, part), (side, price, d - part)]
    return forward + back


class BookFirehose:
    def __init__(self) -> None:
        self.market_tickers: list[str] = []
        """The firehose's markets: a subscription gets the firehose once it covers all."""
        self.tickers: list[str] = []
        """The market of each msg."""
        self.msgs: list[bytes] = []
        """Each delta's `msg` object, NO prices on the NO leg."""
        self._deltas: list[tuple[Market, Delta, int]] = []
        self._yes_scale: list[bytes] | None = None

    def __len__(self) -> int:
        return len(self.msgs)

    def build(
        self,
        builder: Builder,
        book_ledger: Ledger,
        rng: random.Random,
        n: int,
        market_count: int,
        now_us: int,
    ) -> None:
        if n <= 0:
            return
        if n < 2:
            raise BookFirehoseError(
                f"--book-firehose {n}: the order-book firehose needs at least 2 deltas (each "
                "market's changes are undone before it ends); use 0 to turn it off or 2 or more"
            )
        markets = builder.firehose_markets(
            max(1, min(market_count, n // 2)), now_us, series_ticker=BOOK_FIREHOSE_SERIES
        )
        self.market_tickers = [m.ticker for m in markets]
        per, extra = divmod(n, len(markets))
        plans = [market_deltas(m.quote.book, per + (k < extra), rng) for k, m in enumerate(markets)]
        order = [k for k, plan in enumerate(plans) for _ in plan]
        rng.shuffle(order)
        emitted_ms = now_us // 1000
        keeps = book_ledger.keeps_lines
        if keeps:
            for m in markets:
                msg = snapshot_msg(m.ticker, m.market_id, m.quote.book, False)
                book_ledger.append_line(
                    b'{"type":"orderbook_snapshot","channel":"orderbook_delta","msg":%s,'
                    b'"emitted_at_ms":%d}\n' % (msg, emitted_ms)
                )
        nexts = [0] * len(markets)
        for i, k in enumerate(order):
            m = markets[k]
            delta = plans[k][nexts[k]]
            nexts[k] += 1
            ts_us = now_us - (n - 1 - i) * 1000
            msg = delta_msg(m.ticker, m.market_id, delta, ts_us, False)
            self.msgs.append(msg)
            self.tickers.append(m.ticker)
            self._deltas.append((m, delta, ts_us))
            if keeps:
                book_ledger.append_line(
                    b'{"type":"orderbook_delta","channel":"orderbook_delta","msg":%s,'
                    b'"emitted_at_ms":%d}\n' % (msg, emitted_ms)
                )

    def msgs_for(self, use_yes_price: bool) -> list[bytes]:
        """The msgs as a subscription asked for them (NO prices on the YES scale or not)."""
        if not use_yes_price:
            return self.msgs
        if self._yes_scale is None:
            self._yes_scale = [
                delta_msg(m.ticker, m.market_id, d, ts_us, True) for m, d, ts_us in self._deltas
            ]
        return self._yes_scale

    def covered_by(self, tickers: dict[str, None]) -> bool:
        return bool(self.market_tickers) and all(t in tickers for t in self.market_tickers)

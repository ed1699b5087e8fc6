"""Sequence numbers and live order books of the sequenced channels (`orderbook_delta`, `trade`).

Kalshi numbers the frames of a sequenced subscription with the envelope's `seq` (never
`msg.seq`): one counter per sid, shared by every market of the subscription, starting at 1 after
`subscribed`, and consumed by the `ok` and `unsubscribed` answers on that sid too. A jump means
frames were lost; a number seen again or going back means a duplicate or a reordering.

`Sequencer` watches those numbers and keeps a book per market (price -> resting size, both
sides, NO levels at NO-leg prices as subscribed with `use_yes_price: false`) from the snapshot
and the deltas. What it finds is queued in `found` for the feed to record and act on:

- `SequenceGap`: a jump, duplicate or backward seq. On an order-book sid every market of the sid
  is marked invalid (the lost frame could be any of them) and waits for a fresh snapshot.
- `BookInvalid`: a delta for a market with no snapshot, or one that would leave a negative size.
- `BookResynced`: every snapshot asked for on a sid since its books went invalid has arrived.

When the exchange ends an order-book subscription (error 25: it dropped frames of a reader too
slow for its buffer; error 10), `ended` records that as a `SequenceGap` too (every frame from the
next seq on is lost to those books) and follows its markets to their fresh snapshots on the
subscription they are given next, whichever sid that is: then `BookResynced` names the old sid.

It does no I/O: the feed asks for the snapshots (`update_subscription` `get_snapshot`), records
the events and calls the trade backfill. Only the envelope and the few fields a book needs are
decoded here (msgspec structs), so the hot path stays cheap; the writer decodes frames in full.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import msgspec

from kalshi_pipeline.kalshi.errors import FrameDecodeError
from kalshi_pipeline.kalshi.messages import BookSnapshot, decode_frame

BOOK = "orderbook_delta"
TRADE = "trade"
SEQUENCED = (BOOK, TRADE)
DELTA_PREFIX = b'{"type":"orderbook_delta"'
SNAPSHOT_PREFIX = b'{"type":"orderbook_snapshot"'
TRADE_PREFIX = b'{"type":"trade"'
ZERO = Decimal(0)
CENTS = Decimal(100)
IN_ORDER, AFTER_GAP, LATE = range(3)
# the `SequenceGap` kinds of a subscription the exchange ended, by its error code (the coverage
# parser in warehouse/coverage.py reads these words)
ENDED = {25: "buffer overflow", 10: "channel error"}


_PRICES: dict[str, Decimal] = {}


def _price(text: str) -> Decimal:
    """A wire price's value, memoized: a market has at most a hundred or so, and a Decimal
    made once keeps its hash (the book's key). Sizes are not: a firehose of fractional sizes
    repeats too few of them for a cache to pay (measured: 111,524 distinct in 500,000 deltas)."""
    value = _PRICES.get(text)
    if value is None:
        value = Decimal(text)
        if not value.is_finite():
            raise ValueError(f"not a price: {text!r}")
        if len(_PRICES) >= 1 << 14:
            _PRICES.clear()
        _PRICES[text] = value
    return value


# gc=False: these hold only strings and numbers, so the collector need not track them (the hot
# path makes two a frame)
class _DeltaMsg(msgspec.Struct, gc=False):
    market_ticker: str
    side: str | None = None  # missing: that book is invalid, and the frame still takes its seq
    price_dollars: str | None = None
    delta_fp: str | None = None
    price: int | None = None  # legacy: cents
    delta: int | None = None  # legacy: whole contracts


def _unreadable(m: _DeltaMsg) -> str:
    """What a delta the book cannot apply said (each value as received, cut short)."""
    price = m.price_dollars if m.price_dollars is not None else m.price
    size = m.delta_fp if m.delta_fp is not None else m.delta
    side = m.side[:20] if m.side is not None else None
    return f"side {side!r}, price {str(price)[:40]!r}, size {str(size)[:40]!r}"


class _DeltaFrame(msgspec.Struct, gc=False):
    msg: _DeltaMsg
    sid: int | None = None
    seq: int | None = None


class _TradeMsg(msgspec.Struct):
    market_ticker: str = ""
    ts_ms: int | None = None
    ts: int | None = None  # seconds


class _TradeFrame(msgspec.Struct):
    msg: _TradeMsg
    sid: int | None = None
    seq: int | None = None


_DELTA = msgspec.json.Decoder(_DeltaFrame)
_TRADE = msgspec.json.Decoder(_TradeFrame)
_UNREADABLE = (msgspec.DecodeError, ValueError, ArithmeticError, InvalidOperation, RecursionError)


@dataclass(frozen=True, slots=True)
class SequenceGap:
    """Frames `expected`..`received - 1` never came (`kind` "gap"), or `received` came again or
    late ("duplicate", "backward"), or the exchange ended the subscription (a kind of `ENDED`:
    every frame from `expected` on is lost; `received` is the seq its error frame carried, if
    any). `markets`: the order-book markets of the sid, or None for a trade sid (the feed names
    its scope). For trades, `since_ms`/`until_ms` are the times of the last trade before and
    the first after, where the missing trades lie."""

    channel: str
    sid: int
    expected: int
    received: int | None
    kind: str
    markets: tuple[str, ...] | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def detail(self, markets: str) -> str:
        """The `sequence_gap` feed event's detail (the coverage and book queries parse it)."""
        what = "" if self.kind == "gap" else f" ({self.kind})"
        received = "none" if self.received is None else self.received
        return (
            f"{self.channel} sid {self.sid}: seq {self.expected} expected, {received} "
            f"received{what}; markets: {markets}"
        )

    @property
    def ended(self) -> bool:
        """The exchange ended the subscription: its markets go on a new one, not resynced."""
        return self.kind in ENDED.values()


@dataclass(frozen=True, slots=True)
class BookInvalid:
    ticker: str
    sid: int | None
    why: str


@dataclass(frozen=True, slots=True)
class BookResynced:
    channel: str
    sid: int
    markets: tuple[str, ...]


Found = SequenceGap | BookInvalid | BookResynced


@dataclass(slots=True)
class Book:
    """One market's resting bids: price (dollars) -> size, per side."""

    sid: int | None
    yes: dict[Decimal, Decimal] = field(default_factory=dict)
    no: dict[Decimal, Decimal] = field(default_factory=dict)
    valid: bool = True

    def levels(self) -> dict[tuple[str, Decimal], Decimal]:
        """{(side, price): size} of every level with a positive size."""
        out = {("yes", p): s for p, s in self.yes.items() if s > 0}
        out.update({("no", p): s for p, s in self.no.items() if s > 0})
        return out


@dataclass(slots=True)
class _Sid:
    channel: str
    expected: int = 1  # the next seq
    last: int = 0
    missing: set[int] = field(default_factory=set)  # seqs of the last jump not yet seen
    last_trade_ms: int | None = None


class Sequencer:
    """One connection's sequenced subscriptions. Call `reset()` when the connection changes."""

    def __init__(self) -> None:
        self.sids: dict[int, _Sid] = {}
        self.books: dict[str, Book] = {}
        self.sid_markets: dict[int, set[str]] = {}
        self.pending: dict[int, set[str]] = {}  # markets awaiting a fresh snapshot, per sid
        self.resyncing: dict[int, list[str]] = {}  # markets invalidated since the last resync
        self.gone: set[str] = set()  # markets deleted from their subscription: late deltas pass
        # sids the exchange ended: (their markets, those still without a fresh snapshot)
        self.carried: dict[int, tuple[list[str], set[str]]] = {}
        self.found: list[Found] = []
        self.started_ms: int | None = None

    def reset(self, now_ms: int | None = None) -> None:
        self.sids.clear()
        self.books.clear()
        self.sid_markets.clear()
        self.pending.clear()
        self.resyncing.clear()
        self.gone.clear()
        self.carried.clear()
        self.found.clear()
        self.started_ms = now_ms

    # ------------------------------------------------------------------ subscriptions

    def subscribed(self, sid: int, channel: str) -> None:
        """A new sequenced sid (from its `subscribed` answer): numbering starts at 1."""
        self.sids[sid] = _Sid(channel)
        if channel == BOOK:
            self.sid_markets.setdefault(sid, set())

    def added(self, sid: int, tickers: Iterable[str]) -> None:
        """Markets added to an order-book sid: their snapshots follow."""
        markets = self.sid_markets.setdefault(sid, set())
        for t in tickers:
            markets.add(t)
            self.gone.discard(t)

    def removed(self, tickers: Iterable[str]) -> None:
        """Markets deleted from their subscription: their books are dropped."""
        for t in tickers:
            self.books.pop(t, None)
            self.gone.add(t)
            for sid, markets in self.sid_markets.items():
                markets.discard(t)
                log = self.resyncing.get(sid)
                if log and t in log:
                    log.remove(t)  # it gets no snapshot: not among those resynced
                waiting = self.pending.get(sid)
                if waiting and t in waiting:
                    waiting.discard(t)
                    self._maybe_resynced(sid)
            self._carried_over(t)  # it gets no snapshot on the new subscription either

    def dropped(self, sid: int) -> list[str]:
        """A sid ended (error 25, 10, unsubscribed): forget it; returns its markets."""
        self.sids.pop(sid, None)
        markets = sorted(self.sid_markets.pop(sid, set()))
        self.pending.pop(sid, None)
        self.resyncing.pop(sid, None)
        for t in markets:
            book = self.books.get(t)
            if book is not None and book.sid == sid:
                del self.books[t]
        return markets

    def ended(self, sid: int, code: int, seq: int | None = None) -> list[str]:
        """The exchange ended order-book `sid` with error `code` (25, 10; its frame's `seq`, if
        it carried one): every frame from the next seq on is lost to its books. Queues the
        `SequenceGap` naming its markets, forgets the sid, and waits for each market's fresh
        snapshot on whatever subscription it is given next (`BookResynced` of this sid when all
        are in). Returns the markets, for the feed to subscribe again."""
        state = self.sids.get(sid)
        expected = state.expected if state is not None else 1
        markets = self.dropped(sid)
        kind = ENDED.get(code, f"error {code}")
        self.found.append(SequenceGap(BOOK, sid, expected, seq, kind, tuple(markets)))
        self.carried[sid] = (markets, set(markets))
        if not markets:
            self._carried_over(None)  # no book to mend: said at once
        return markets

    def trade_ended(self, sid: int, code: int, seq: int | None = None) -> SequenceGap | None:
        """The exchange ended trade `sid` with error `code`: the trades from the last one
        received (or the subscription's start) on are lost until the channel streams again.
        Queues and returns the `SequenceGap` (its `since_ms` set, `until_ms` left for the feed
        to fill once subscribed again); None when `sid` is no trade subscription of ours."""
        state = self.sids.get(sid)
        if state is None or state.channel != TRADE:
            return None
        del self.sids[sid]
        since = state.last_trade_ms if state.last_trade_ms is not None else self.started_ms
        kind = ENDED.get(code, f"error {code}")
        gap = SequenceGap(TRADE, sid, state.expected, seq, kind, None, since, None)
        self.found.append(gap)
        return gap

    def _carried_over(self, ticker: str | None) -> None:
        """`ticker` has a fresh snapshot (or will never get one): the ended sids waiting only
        for it are resynced."""
        for sid, (markets, waiting) in list(self.carried.items()):
            if ticker is not None:
                waiting.discard(ticker)
            if not waiting:
                del self.carried[sid]
                self.found.append(BookResynced(BOOK, sid, tuple(markets)))

    def markets_of(self, sid: int) -> list[str]:
        return sorted(self.sid_markets.get(sid, ()))

    def sid_of(self, ticker: str) -> int | None:
        for sid, markets in self.sid_markets.items():
            if ticker in markets:
                return sid
        return None

    def invalidate(self, sid: int, tickers: Iterable[str]) -> list[str]:
        """Mark books invalid and waiting for a snapshot (a gap, or a REST mismatch); returns
        the markets newly waiting."""
        waiting = self.pending.setdefault(sid, set())
        log = self.resyncing.setdefault(sid, [])
        new = []
        for t in tickers:
            book = self.books.get(t)
            if book is not None:
                book.valid = False
            if t not in waiting:
                waiting.add(t)
                new.append(t)
            if t not in log:
                log.append(t)
        return new

    # ------------------------------------------------------------------ frames

    def number(self, sid: int | None, seq: int | None) -> int:
        """Check one numbered frame of a sequenced sid: IN_ORDER, AFTER_GAP (frames before it
        were lost; it is itself new) or LATE (a duplicate, or older than frames already seen).
        A jump, a duplicate or a backward seq is queued in `found` (a late frame of a jump
        already recorded is not recorded again)."""
        if sid is None or seq is None:
            return IN_ORDER
        state = self.sids.get(sid)
        if state is None:
            return IN_ORDER  # not one of ours (lifecycle), or from before a resubscribe
        expected = state.expected
        if seq == expected:
            state.last = seq
            state.expected = seq + 1
            return IN_ORDER
        if seq > expected:
            state.missing = set(range(expected, seq)) if seq - expected <= 10_000 else set()
            state.last = seq
            state.expected = seq + 1
            kind, code = "gap", AFTER_GAP
        elif seq in state.missing:
            state.missing.discard(seq)
            return LATE
        else:
            kind = "duplicate" if seq == state.last else "backward"
            code = LATE
        markets: tuple[str, ...] | None = None
        if state.channel == BOOK:
            markets = tuple(self.markets_of(sid))
            self.invalidate(sid, markets)
        self.found.append(SequenceGap(state.channel, sid, expected, seq, kind, markets))
        if markets == ():
            self._maybe_resynced(sid)  # no book to mend (none yet): said at once
        return code

    def snapshot(self, data: bytes) -> BookSnapshot | None:
        """An `orderbook_snapshot`: the market's book starts afresh from it, unless it came
        late (then an older state: the book waits for the next one)."""
        try:
            snap = decode_frame(data)
        except FrameDecodeError:
            return None
        if not isinstance(snap, BookSnapshot):
            return None
        sid = snap.sid
        order = self.number(sid, snap.seq)
        ticker = snap.market_ticker
        if sid is not None:
            self.sid_markets.setdefault(sid, set()).add(ticker)
        self.gone.discard(ticker)
        book = Book(sid)
        for price, size in snap.yes:
            book.yes[price] = book.yes.get(price, ZERO) + size
        for price, size in snap.no:
            book.no[price] = book.no.get(price, ZERO) + size
        self.books[ticker] = book
        if sid is None:
            return snap
        if order == LATE:
            self.invalidate(sid, [ticker])
            return snap
        if self.carried:
            self._carried_over(ticker)
        waiting = self.pending.get(sid)
        if waiting and ticker in waiting:
            waiting.discard(ticker)
            self._maybe_resynced(sid)
        return snap

    def _maybe_resynced(self, sid: int) -> None:
        if self.pending.get(sid):
            return
        self.pending.pop(sid, None)
        if sid in self.resyncing:  # said even when every market waiting went away meanwhile
            self.found.append(BookResynced(BOOK, sid, tuple(self.resyncing.pop(sid))))

    def delta(self, data: bytes) -> None:
        """An `orderbook_delta`: the hot path (the envelope and four fields decoded)."""
        try:
            frame = _DELTA.decode(data)
        except _UNREADABLE:
            return  # the writer decodes it tolerantly and records what was odd
        sid, seq = frame.sid, frame.seq
        state = self.sids.get(sid) if sid is not None else None
        if state is not None and seq == state.expected:  # `number`'s in-order case, inline
            state.last = seq
            state.expected = seq + 1
        elif self.number(sid, seq) != IN_ORDER:
            return  # after a gap every book of the sid waits for a snapshot; late: stale
        m = frame.msg
        ticker = m.market_ticker
        book = self.books.get(ticker)
        if book is None:
            if ticker in self.gone or (sid is not None and ticker in self.pending.get(sid, ())):
                return
            self._invalid(ticker, sid, "delta received before any snapshot")
            return
        if not book.valid:
            return
        price = change = None
        try:
            if m.price_dollars is not None:
                price = _price(m.price_dollars)
            elif m.price is not None:
                price = Decimal(m.price) / CENTS
            if m.delta_fp is not None:
                change = Decimal(m.delta_fp)
            elif m.delta is not None:
                change = Decimal(m.delta)
        except _UNREADABLE:
            pass
        side = book.yes if m.side == "yes" else book.no if m.side == "no" else None
        if side is None or price is None or change is None or not change.is_finite():
            # the book cannot follow this change: it is unknown until a fresh snapshot
            self._invalid(
                ticker, sid, f"a delta the book cannot apply: {_unreadable(m)} (seq {seq})"
            )
            return
        size = side.get(price, ZERO) + change
        if size > 0:
            side[price] = size
        elif size == 0:
            side.pop(price, None)
        else:
            self._invalid(
                ticker,
                sid,
                f"a delta of {change} at {m.side} {price} would leave {size} resting (seq {seq})",
            )

    def _invalid(self, ticker: str, sid: int | None, why: str) -> None:
        self.found.append(BookInvalid(ticker, sid, why))
        if sid is not None:
            self.sid_markets.setdefault(sid, set()).add(ticker)
            self.invalidate(sid, [ticker])
        else:
            book = self.books.get(ticker)
            if book is not None:
                book.valid = False

    def trade(self, data: bytes) -> SequenceGap | None:
        """A `trade`: numbered like the books; a gap carries the window the lost trades are in
        (from the last trade before it, or the subscription's start, to this trade)."""
        try:
            frame = _TRADE.decode(data)
        except _UNREADABLE:
            return None
        m = frame.msg
        ts = m.ts_ms if m.ts_ms is not None else (m.ts * 1000 if m.ts is not None else None)
        state = self.sids.get(frame.sid) if frame.sid is not None else None
        before = state.last_trade_ms if state is not None else None
        found = len(self.found)
        self.number(frame.sid, frame.seq)
        if state is not None and ts is not None:
            state.last_trade_ms = max(ts, before if before is not None else ts)
        if len(self.found) == found:
            return None
        gap = self.found[-1]
        assert isinstance(gap, SequenceGap)
        windowed = SequenceGap(
            gap.channel,
            gap.sid,
            gap.expected,
            gap.received,
            gap.kind,
            None,
            before if before is not None else self.started_ms,
            ts,
        )
        self.found[-1] = windowed
        return windowed

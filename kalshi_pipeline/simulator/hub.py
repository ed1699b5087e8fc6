"""Subscriptions and fan-out: every published message goes to its ledger and to each WebSocket
subscription that covers its market, encoded once and framed per sid.

Every data frame carries a top-level `sending_ts_ms` after `msg`: the wall-clock milliseconds at
which the frame was queued for its sockets, as Kalshi stamps frames since October 2026. The
ticker ledger keeps the ticker `msg` alone (plus `emitted_at_ms`), as before; order-book changes,
trades, the snapshots sent and the frames the drop and reorder faults touched go to the book
ledger (see ledger.py).

Sequenced channels (`orderbook_delta`, `trade`, the lifecycle channels) number their frames per
sid on one counter shared by all the subscription's markets; `ok` and `unsubscribed` take a
number from the same counter (kalshi-protocol.md §3.8). Every sequenced data frame passes
`_emit`, where the `drop_frames` and `reorder_frames` faults act.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from kalshi_pipeline.simulator.book import Delta
from kalshi_pipeline.simulator.faults import Faults
from kalshi_pipeline.simulator.ledger import Ledger
from kalshi_pipeline.simulator.orderbook import delta_msg, snapshot_msg

if TYPE_CHECKING:
    from kalshi_pipeline.simulator.model import Market

TICKER = "ticker"
TRADE = "trade"
ORDERBOOK = "orderbook_delta"
ORDERBOOK_SNAPSHOT = "orderbook_snapshot"
MARKET_LIFECYCLE = "market_lifecycle_v2"
MVE_LIFECYCLE = "multivariate_market_lifecycle"
SEQUENCED = frozenset({ORDERBOOK, TRADE, MARKET_LIFECYCLE, MVE_LIFECYCLE})


class Outlet(Protocol):
    """What a WebSocket session offers the hub (implemented by `ws.Session`)."""

    def send_ticker(self, frame: bytes, index: int) -> None: ...

    def send_data(self, frame: bytes) -> None: ...

    @property
    def conn_id(self) -> int: ...


class Subscription:
    __slots__ = (
        "active",
        "all_markets",
        "channel",
        "held",
        "ids",
        "outlet",
        "prefix",
        "seq",
        "sid",
        "skip_ack",
        "tickers",
        "use_yes_price",
    )

    def __init__(self, outlet: Outlet, sid: int, channel: str) -> None:
        self.outlet = outlet
        self.sid = sid
        self.channel = channel
        self.all_markets = True
        self.tickers: dict[str, None] = {}
        """Market tickers in the order they were added (an ordered set)."""
        self.ids: dict[str, None] = {}
        """Market ids the client named, for `ok` acks of id-based subscriptions."""
        self.skip_ack = False
        self.seq = 0
        self.active = True
        self.use_yes_price = False
        """Order book only: NO levels on the YES price scale."""
        self.held: tuple[int, bytes] | None = None
        """A (seq, frame) the reorder fault holds back until the next frame has gone."""
        self.prefix = b'{"type":"%s","sid":%d,"msg":' % (channel.encode(), sid)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def covers(self, ticker: str) -> bool:
        return self.all_markets or ticker in self.tickers


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def frame_tail(msg: bytes, sending_ts_ms: int) -> bytes:
    """What follows a subscription's `{"type":...,"sid":N,"msg":` prefix."""
    return b'%s,"sending_ts_ms":%d}\n' % (msg, sending_ts_ms)


class Hub:
    def __init__(
        self, ledger: Ledger, book_ledger: Ledger | None = None, faults: Faults | None = None
    ) -> None:
        self.ledger = ledger
        self.book_ledger = book_ledger if book_ledger is not None else Ledger(None)
        self.faults = faults if faults is not None else Faults()
        self._all: dict[str, dict[Subscription, None]] = {TICKER: {}, TRADE: {}, ORDERBOOK: {}}
        self._by_market: dict[str, dict[str, dict[Subscription, None]]] = {
            TICKER: {},
            TRADE: {},
            ORDERBOOK: {},
        }
        self.book_deltas_published = 0
        self.book_frames_queued = 0
        self.frames_dropped = 0
        self.frames_reordered = 0
        self._lifecycle: dict[Subscription, None] = {}
        self.ticker_frames_queued = 0
        self.trade_frames_queued = 0
        self.lifecycle_frames_queued = 0
        self.trades_published = 0
        self.lifecycle_published = 0

    # Index maintenance: subscriptions are looked up by market on every publish.

    def add(self, sub: Subscription) -> None:
        if sub.channel == MARKET_LIFECYCLE:
            self._lifecycle[sub] = None
        elif sub.channel in self._all:
            if sub.all_markets:
                self._all[sub.channel][sub] = None
            else:
                self.add_markets(sub, list(sub.tickers))

    def add_markets(self, sub: Subscription, tickers: list[str]) -> None:
        index = self._by_market.get(sub.channel)
        if index is None or sub.all_markets:
            return
        for t in tickers:
            index.setdefault(t, {})[sub] = None

    def remove_markets(self, sub: Subscription, tickers: list[str]) -> None:
        index = self._by_market.get(sub.channel)
        if index is None:
            return
        for t in tickers:
            subs = index.get(t)
            if subs is not None:
                subs.pop(sub, None)
                if not subs:
                    del index[t]

    def make_all_markets(self, sub: Subscription) -> None:
        self.remove_markets(sub, list(sub.tickers))
        sub.tickers.clear()
        sub.ids.clear()
        sub.all_markets = True
        if sub.channel in self._all:
            self._all[sub.channel][sub] = None

    def remove(self, sub: Subscription) -> None:
        sub.active = False
        self._lifecycle.pop(sub, None)
        if sub.channel in self._all:
            self._all[sub.channel].pop(sub, None)
            self.remove_markets(sub, list(sub.tickers))

    # Publishing.

    def publish_ticker(self, ticker: str, msg: bytes, emitted_at_ms: int) -> int:
        """Ledger line first, then one frame per covering subscription; returns the index."""
        index = self.ledger.append(msg, emitted_at_ms)
        tail = frame_tail(msg, now_ms())
        n = 0
        for sub in self._all[TICKER]:
            sub.outlet.send_ticker(sub.prefix + tail, index)
            n += 1
        subs = self._by_market[TICKER].get(ticker)
        if subs:
            for sub in subs:
                sub.outlet.send_ticker(sub.prefix + tail, index)
                n += 1
        self.ticker_frames_queued += n
        return index

    def publish_trade(self, ticker: str, msg: bytes, emitted_at_ms: int) -> None:
        self.trades_published += 1
        self.book_ledger.append_line(
            b'{"type":"trade","channel":"trade","msg":%s,"emitted_at_ms":%d}\n'
            % (msg, emitted_at_ms)
        )
        targets = list(self._all[TRADE])
        subs = self._by_market[TRADE].get(ticker)
        if subs:
            targets.extend(subs)
        sending = now_ms()
        for sub in targets:
            self._emit(sub, TRADE, msg, sending)
        self.trade_frames_queued += len(targets)

    def publish_book(self, m: Market, deltas: list[Delta], ts_us: int) -> None:
        """Book changes of one market: a book-ledger line each, then a frame per subscription."""
        if not deltas:
            return
        self.book_deltas_published += len(deltas)
        subs = self._by_market[ORDERBOOK].get(m.ticker)
        ledger = self.book_ledger
        if not subs and not ledger.keeps_lines:
            return  # nobody to tell: skip the encoding
        plain = [delta_msg(m.ticker, m.market_id, d, ts_us, False) for d in deltas]
        if ledger.keeps_lines:
            emitted = ts_us // 1000
            for msg in plain:
                ledger.append_line(
                    b'{"type":"orderbook_delta","channel":"orderbook_delta","msg":%s,'
                    b'"emitted_at_ms":%d}\n' % (msg, emitted)
                )
        if not subs:
            return
        yes_scale: list[bytes] | None = None
        sending = now_ms()
        for sub in list(subs):
            msgs = plain
            if sub.use_yes_price:
                if yes_scale is None:
                    yes_scale = [delta_msg(m.ticker, m.market_id, d, ts_us, True) for d in deltas]
                msgs = yes_scale
            for msg in msgs:
                self._emit(sub, ORDERBOOK, msg, sending, frame_type=b"orderbook_delta")
            self.book_frames_queued += len(msgs)

    def record_book(self, m: Market, emitted_at_ms: int) -> None:
        """A book-ledger snapshot line of a market's whole book (at start, and for books that
        appear without deltas), so the ledger alone rebuilds every book."""
        msg = snapshot_msg(m.ticker, m.market_id, m.quote.book, False)
        self.book_ledger.append_line(
            b'{"type":"orderbook_snapshot","channel":"orderbook_delta","msg":%s,'
            b'"emitted_at_ms":%d}\n' % (msg, emitted_at_ms)
        )

    def send_snapshot(self, sub: Subscription, ticker: str, m: Market | None) -> None:
        """One `orderbook_snapshot` on `sub`, numbered on its counter; recorded as sent."""
        book = m.quote.book if m is not None else None
        msg = snapshot_msg(ticker, m.market_id if m is not None else "", book, sub.use_yes_price)
        sending = now_ms()
        seq = self._emit(sub, ORDERBOOK, msg, sending, frame_type=b"orderbook_snapshot")
        self.book_ledger.append_line(
            b'{"type":"orderbook_snapshot","channel":"orderbook_delta","conn_id":%d,"sid":%d,'
            b'"seq":%d,"use_yes_price":%s,"msg":%s,"emitted_at_ms":%d}\n'
            % (
                sub.outlet.conn_id,
                sub.sid,
                seq,
                b"true" if sub.use_yes_price else b"false",
                msg,
                sending,
            )
        )

    def publish_lifecycle(self, msg_type: str, msg: bytes) -> None:
        """`market_lifecycle_v2` or `event_lifecycle`: every lifecycle subscription, one seq."""
        self.lifecycle_published += 1
        sending = now_ms()
        for sub in list(self._lifecycle):
            self._emit(sub, sub.channel, msg, sending, frame_type=msg_type.encode())
        self.lifecycle_frames_queued += len(self._lifecycle)

    def _emit(
        self,
        sub: Subscription,
        channel: str,
        msg: bytes,
        sending: int,
        frame_type: bytes | None = None,
    ) -> int:
        """Number one data frame on `sub` and queue it, unless a fault drops or holds it back;
        returns its seq."""
        ftype = frame_type if frame_type is not None else channel.encode()
        seq = sub.next_seq()
        frame = b'{"type":"%s","sid":%d,"seq":%d,"msg":%s,"sending_ts_ms":%d}\n' % (
            ftype,
            sub.sid,
            seq,
            msg,
            sending,
        )
        faults = self.faults
        if faults.take_drop(channel):
            self.frames_dropped += 1
            self._fault_line(b"dropped", sub, channel, b'"seq":%d,"frame_type":"%s"' % (seq, ftype))
            return seq
        held = sub.held
        if held is not None:
            sub.held = None
            sub.outlet.send_data(frame)
            sub.outlet.send_data(held[1])
            self.frames_reordered += 1
            self._fault_line(b"reordered", sub, channel, b'"seqs":[%d,%d]' % (held[0], seq))
            return seq
        if faults.take_reorder(channel):
            sub.held = (seq, frame)
            return seq
        sub.outlet.send_data(frame)
        return seq

    def _fault_line(self, kind: bytes, sub: Subscription, channel: str, body: bytes) -> None:
        self.book_ledger.append_line(
            b'{"type":"%s","channel":"%s","conn_id":%d,"sid":%d,%s,"emitted_at_ms":%d}\n'
            % (kind, channel.encode(), sub.outlet.conn_id, sub.sid, body, now_ms())
        )

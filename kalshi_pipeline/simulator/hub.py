"""Subscriptions and fan-out: every published message goes to the ledger (ticker only) and to
each WebSocket subscription that covers its market, encoded once and framed per sid.

Every data frame carries a top-level `sending_ts_ms` after `msg`: the wall-clock milliseconds at
which the frame was queued for its sockets, as Kalshi stamps frames since October 2026. The
ledger keeps the ticker `msg` alone (plus `emitted_at_ms`), as before.
"""

from __future__ import annotations

import time
from typing import Protocol

from kalshi_pipeline.simulator.ledger import Ledger

TICKER = "ticker"
TRADE = "trade"
MARKET_LIFECYCLE = "market_lifecycle_v2"
MVE_LIFECYCLE = "multivariate_market_lifecycle"
SEQUENCED = frozenset({TRADE, MARKET_LIFECYCLE, MVE_LIFECYCLE})


class Outlet(Protocol):
    """What a WebSocket session offers the hub (implemented by `ws.Session`)."""

    def send_ticker(self, frame: bytes, index: int) -> None: ...

    def send_data(self, frame: bytes) -> None: ...


class Subscription:
    __slots__ = (
        "active",
        "all_markets",
        "channel",
        "ids",
        "outlet",
        "prefix",
        "seq",
        "sid",
        "skip_ack",
        "tickers",
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
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._all: dict[str, dict[Subscription, None]] = {TICKER: {}, TRADE: {}}
        self._by_market: dict[str, dict[str, dict[Subscription, None]]] = {TICKER: {}, TRADE: {}}
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

    def publish_trade(self, ticker: str, msg: bytes) -> None:
        self.trades_published += 1
        targets = list(self._all[TRADE])
        subs = self._by_market[TRADE].get(ticker)
        if subs:
            targets.extend(subs)
        sending = now_ms()
        for sub in targets:
            sub.outlet.send_data(sequenced_frame(TRADE, sub, msg, sending))
        self.trade_frames_queued += len(targets)

    def publish_lifecycle(self, msg_type: str, msg: bytes) -> None:
        """`market_lifecycle_v2` or `event_lifecycle`: every lifecycle subscription, one seq."""
        self.lifecycle_published += 1
        sending = now_ms()
        for sub in self._lifecycle:
            sub.outlet.send_data(sequenced_frame(msg_type, sub, msg, sending))
        self.lifecycle_frames_queued += len(self._lifecycle)


def sequenced_frame(msg_type: str, sub: Subscription, msg: bytes, sending_ts_ms: int) -> bytes:
    return b'{"type":"%s","sid":%d,"seq":%d,"msg":%s,"sending_ts_ms":%d}\n' % (
        msg_type.encode(),
        sub.sid,
        sub.next_seq(),
        msg,
        sending_ts_ms,
    )

"""The exchange's state: series, events and markets, their statuses, and how they read on the wire.

One `Exchange` object is the single source of truth behind REST and WebSocket; everything runs on
one asyncio loop, so a REST read always sees every change whose ticker frame was already queued.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from kalshi_pipeline.simulator.book import Quote
from kalshi_pipeline.simulator.wire import DOLLARS, count_fp, rfc3339

INITIALIZED = "initialized"
INACTIVE = "inactive"
ACTIVE = "active"
CLOSED = "closed"
DETERMINED = "determined"
FINALIZED = "finalized"
STATUSES = (INITIALIZED, INACTIVE, ACTIVE, CLOSED, DETERMINED, FINALIZED)

FILTER_STATUSES: dict[str, frozenset[str]] = {
    "unopened": frozenset({INITIALIZED}),
    "open": frozenset({ACTIVE}),
    "paused": frozenset({INACTIVE}),
    "closed": frozenset({CLOSED, DETERMINED, "disputed", "amended"}),
    "settled": frozenset({FINALIZED}),
}
"""`GET /markets?status=` vocabulary -> market `status` values (kalshi-protocol.md §4.1)."""

PRICE_RANGES = [{"end": "1.0000", "start": "0.0000", "step": "0.0100"}]

DEFAULT_SHARD = 0
COMBOS_SHARD = 1
CRYPTO_SHARD = 2
SPORTS_SHARD = 3
SHARDS: dict[int, str] = {
    DEFAULT_SHARD: "Default",
    COMBOS_SHARD: "Combos",
    CRYPTO_SHARD: "Crypto",
    SPORTS_SHARD: "Sports",
}
"""Kalshi's matching-engine shards (`exchange_index`) and the simulator's description of each:
crypto and commodities on 2, tennis, baseball and basketball on 3, combos on 1, the rest on 0
(kalshi-changes-2026-autumn.md §4). The simulator lists no combos, so shard 1 stays empty."""

SETTLEMENT_BOUNDS_DEFAULT = "default"
SETTLEMENT_BOUNDS_FLOOR = "floor"


@dataclass(slots=True, eq=False)
class Series:
    ticker: str
    title: str
    category: str
    frequency: str
    tags: list[str]
    created_us: int
    updated_us: int
    exchange_index: int = DEFAULT_SHARD

    def to_json(self) -> dict[str, Any]:
        return {
            "additional_prohibitions": [],
            "categories": [self.category],
            "category": self.category,
            "contract_terms_url": "https://kalshi.com/simulator/terms.pdf",
            "contract_url": "https://kalshi.com/simulator/contract.pdf",
            "exchange_index": self.exchange_index,
            "fee_multiplier": 1,
            "fee_type": "quadratic",
            "frequency": self.frequency,
            "last_updated_ts": rfc3339(self.updated_us),
            "settlement_sources": [{"name": "Simulator", "url": "https://kalshi.com/simulator"}],
            "tags": list(self.tags),
            "ticker": self.ticker,
            "title": self.title,
        }


@dataclass(slots=True, eq=False)
class Market:
    ticker: str
    event_ticker: str
    series_ticker: str
    market_id: str
    title: str
    yes_sub_title: str
    no_sub_title: str
    rules_primary: str
    rules_secondary: str
    strike_type: str
    floor_strike: float | None
    cap_strike: float | None
    created_us: int
    open_us: int
    close_us: int
    expected_expiration_us: int
    latest_expiration_us: int
    updated_us: int
    status: str
    quote: Quote
    previous: tuple[int, int, int] = (0, 0, 0)
    volume_24h_base: int = 0
    result: str = ""
    settlement_c: int | None = None
    determination_us: int | None = None
    settled_us: int | None = None
    settlement_timer_s: int = 60
    can_close_early: bool = True
    exchange_index: int = DEFAULT_SHARD
    settlement_floor_c: int | None = None
    """Set on `floor` markets: the lowest value YES can settle at, in cents."""
    live: bool = True
    """Driven by the Poisson process while active (firehose markets are not)."""
    msg: bytes = b""
    """The latest ticker msg published for this market (empty before the first)."""
    msg_index: int = -1
    """Ledger line of `msg`, -1 while nothing was published."""

    def sort_key(self) -> tuple[int, str]:
        return (self.created_us, self.ticker)

    def to_json(self) -> dict[str, Any]:
        q = self.quote
        pb, pa, pp = self.previous
        body: dict[str, Any] = {
            "can_close_early": self.can_close_early,
            "close_time": rfc3339(self.close_us),
            "created_time": rfc3339(self.created_us),
            "event_ticker": self.event_ticker,
            "exchange_index": self.exchange_index,
            "expected_expiration_time": rfc3339(self.expected_expiration_us),
            "expiration_time": rfc3339(self.latest_expiration_us),
            "expiration_value": "",
            "last_price_dollars": DOLLARS[q.last],
            "latest_expiration_time": rfc3339(self.latest_expiration_us),
            "market_type": "binary",
            "no_ask_dollars": DOLLARS[100 - q.bid],
            "no_bid_dollars": DOLLARS[100 - q.ask],
            "no_sub_title": self.no_sub_title,
            "notional_value_dollars": "1.0000",
            "open_interest_fp": count_fp(q.oi),
            "open_time": rfc3339(self.open_us),
            "previous_price_dollars": DOLLARS[pp],
            "previous_yes_ask_dollars": DOLLARS[pa],
            "previous_yes_bid_dollars": DOLLARS[pb],
            "price_level_structure": "linear_cent",
            "price_ranges": PRICE_RANGES,
            "result": self.result,
            "rules_primary": self.rules_primary,
            "rules_secondary": self.rules_secondary,
            "settlement_bounds_type": (
                SETTLEMENT_BOUNDS_DEFAULT
                if self.settlement_floor_c is None
                else SETTLEMENT_BOUNDS_FLOOR
            ),
            "settlement_timer_seconds": self.settlement_timer_s,
            "status": self.status,
            "strike_type": self.strike_type,
            "ticker": self.ticker,
            "title": self.title,
            "updated_time": rfc3339(self.updated_us),
            "volume_24h_fp": count_fp(q.volume - self.volume_24h_base),
            "volume_fp": count_fp(q.volume),
            "yes_ask_dollars": DOLLARS[q.ask],
            "yes_ask_size_fp": count_fp(q.ask_size),
            "yes_bid_dollars": DOLLARS[q.bid],
            "yes_bid_size_fp": count_fp(q.bid_size),
            "yes_sub_title": self.yes_sub_title,
        }
        if self.floor_strike is not None:
            body["floor_strike"] = self.floor_strike
        if self.cap_strike is not None:
            body["cap_strike"] = self.cap_strike
        if self.settlement_floor_c is not None:
            body["settlement_floor_dollars"] = DOLLARS[self.settlement_floor_c]
        if self.settlement_c is not None:
            body["settlement_value_dollars"] = DOLLARS[self.settlement_c]
        if self.settled_us is not None:
            body["settlement_ts"] = rfc3339(self.settled_us)
        return dict(sorted(body.items()))


@dataclass(slots=True, eq=False)
class Event:
    ticker: str
    series_ticker: str
    title: str
    sub_title: str
    collateral_return_type: str
    mutually_exclusive: bool
    strike_date_us: int | None
    strike_period: str
    created_us: int
    updated_us: int
    exchange_index: int = DEFAULT_SHARD
    markets: list[Market] = field(default_factory=list)

    def sort_key(self) -> tuple[int, str]:
        return (self.created_us, self.ticker)

    def to_json(self, with_markets: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "collateral_return_type": self.collateral_return_type,
            "event_ticker": self.ticker,
            "exchange_index": self.exchange_index,
            "last_updated_ts": rfc3339(self.updated_us),
            "mutually_exclusive": self.mutually_exclusive,
            "product_metadata": {},
            "series_ticker": self.series_ticker,
            "strike_period": self.strike_period,
            "sub_title": self.sub_title,
            "title": self.title,
        }
        if self.strike_date_us is not None:
            body["strike_date"] = rfc3339(self.strike_date_us)
        if with_markets:
            body["markets"] = [m.to_json() for m in self.markets]
        return body


def encode_ticker(market_id: str, ticker: str, q: Quote, ts_us: int) -> bytes:
    """The ticker `msg` object with the current field set, key order and formats (§3.6)."""
    ts_ms = ts_us // 1000
    return (
        f'{{"market_id":"{market_id}","market_ticker":"{ticker}",'
        f'"price_dollars":"{DOLLARS[q.last]}","yes_bid_dollars":"{DOLLARS[q.bid]}",'
        f'"yes_ask_dollars":"{DOLLARS[q.ask]}","volume_fp":"{count_fp(q.volume)}",'
        f'"open_interest_fp":"{count_fp(q.oi)}","dollar_volume":{q.volume // 200},'
        f'"dollar_open_interest":{q.oi // 200},"yes_bid_size_fp":"{count_fp(q.bid_size)}",'
        f'"yes_ask_size_fp":"{count_fp(q.ask_size)}",'
        f'"last_trade_size_fp":"{count_fp(q.last_size)}",'
        f'"ts":{ts_ms // 1000},"ts_ms":{ts_ms},"time":"{rfc3339(ts_us)}"}}'
    ).encode()


def new_market_id(rng_bits: int) -> str:
    return str(uuid.UUID(int=rng_bits, version=4))


class Exchange:
    """All series, events and markets, with the orderings REST pages through."""

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}
        self.events: dict[str, Event] = {}
        self.markets: dict[str, Market] = {}
        self.markets_by_id: dict[str, Market] = {}
        self._market_order: list[tuple[int, str]] = []
        self._event_order: list[tuple[int, str]] = []
        self._market_order_sorted = True
        self._event_order_sorted = True
        self._live: list[Market] = []
        self._live_dirty = True

    def add_series(self, s: Series) -> None:
        self.series[s.ticker] = s

    def add_event(self, e: Event) -> None:
        if e.ticker in self.events:
            raise ValueError(f"duplicate event ticker {e.ticker}")
        self.events[e.ticker] = e
        self._event_order_sorted = _append_key(self._event_order, e.sort_key()) and (
            self._event_order_sorted
        )

    def add_market(self, m: Market) -> None:
        if m.ticker in self.markets:
            raise ValueError(f"duplicate market ticker {m.ticker}")
        self.markets[m.ticker] = m
        self.markets_by_id[m.market_id] = m
        self.events[m.event_ticker].markets.append(m)
        self._market_order_sorted = _append_key(self._market_order, m.sort_key()) and (
            self._market_order_sorted
        )
        if m.status == ACTIVE and m.live:
            self._live_dirty = True

    @property
    def market_order(self) -> list[tuple[int, str]]:
        """(created_us, ticker) ascending; REST reads it backwards."""
        if not self._market_order_sorted:
            self._market_order.sort()
            self._market_order_sorted = True
        return self._market_order

    @property
    def event_order(self) -> list[tuple[int, str]]:
        if not self._event_order_sorted:
            self._event_order.sort()
            self._event_order_sorted = True
        return self._event_order

    def set_status(self, m: Market, status: str, now_us: int) -> None:
        if ACTIVE in (m.status, status):
            self._live_dirty = True
        m.status = status
        m.updated_us = now_us
        e = self.events[m.event_ticker]
        e.updated_us = now_us

    def live_active(self) -> list[Market]:
        """Markets the Poisson process moves; rebuilt only after a status change."""
        if self._live_dirty:
            self._live = [m for m in self.markets.values() if m.status == ACTIVE and m.live]
            self._live_dirty = False
        return self._live

    def count_by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for m in self.markets.values():
            counts[m.status] = counts.get(m.status, 0) + 1
        return counts


def _append_key(order: list[tuple[int, str]], key: tuple[int, str]) -> bool:
    """Append; True while the list stays sorted (new listings are usually the newest), so the
    start-up universe is sorted once rather than kept sorted one insertion at a time."""
    order.append(key)
    return len(order) < 2 or order[-2] <= key

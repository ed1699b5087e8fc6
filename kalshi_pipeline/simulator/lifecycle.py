"""`market_lifecycle_v2` and `event_lifecycle` payloads as Kalshi sends them today.

Only `created`, `determined` and `settled` exist here: Kalshi sends no event for the scheduled
open (initialized -> active) nor for the scheduled close (active -> closed). As in real frames,
`created` carries the market's `exchange_index`, `determined` the `result` and the
`settlement_value`, and `settled` nothing but `settled_ts`; every `event_lifecycle` carries its
event's `exchange_index`.
"""

from __future__ import annotations

from typing import Any

from kalshi_pipeline.simulator.model import PRICE_RANGES, Event, Market
from kalshi_pipeline.simulator.wire import DOLLARS, dumps

MARKET_LIFECYCLE = "market_lifecycle_v2"
EVENT_LIFECYCLE = "event_lifecycle"


def created(m: Market) -> bytes:
    metadata: dict[str, Any] = {
        "name": m.title,
        "title": m.title,
        "yes_sub_title": m.yes_sub_title,
        "no_sub_title": m.no_sub_title,
        "rules_primary": m.rules_primary,
        "rules_secondary": m.rules_secondary,
        "can_close_early": m.can_close_early,
        "event_ticker": m.event_ticker,
        "expected_expiration_ts": m.expected_expiration_us // 1_000_000,
        "strike_type": m.strike_type,
    }
    if m.floor_strike is not None:
        metadata["floor_strike"] = m.floor_strike
    if m.cap_strike is not None:
        metadata["cap_strike"] = m.cap_strike
    return dumps(
        {
            "market_ticker": m.ticker,
            "event_type": "created",
            "exchange_index": m.exchange_index,
            "open_ts": m.open_us // 1_000_000,
            "close_ts": m.close_us // 1_000_000,
            "additional_metadata": metadata,
            "price_level_structure": "linear_cent",
            "price_ranges": PRICE_RANGES,
        }
    )


def determined(m: Market) -> bytes:
    assert m.determination_us is not None and m.settlement_c is not None
    return dumps(
        {
            "market_ticker": m.ticker,
            "event_type": "determined",
            "result": m.result,
            "settlement_value": DOLLARS[m.settlement_c],
            "determination_ts": m.determination_us // 1_000_000,
        }
    )


def settled(m: Market) -> bytes:
    assert m.settled_us is not None
    return dumps(
        {
            "market_ticker": m.ticker,
            "event_type": "settled",
            "settled_ts": m.settled_us // 1_000_000,
        }
    )


def event_created(e: Event) -> bytes:
    body: dict[str, Any] = {
        "event_ticker": e.ticker,
        "exchange_index": e.exchange_index,
        "title": e.title,
        "subtitle": e.sub_title,
        "collateral_return_type": e.collateral_return_type,
        "series_ticker": e.series_ticker,
    }
    if e.strike_date_us is not None:
        body["strike_date"] = e.strike_date_us // 1_000_000
    body["strike_period"] = e.strike_period
    return dumps(body)

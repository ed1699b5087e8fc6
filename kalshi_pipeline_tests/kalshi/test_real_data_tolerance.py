"""Real data breaks the spec; one odd object must never cost the others.

Starting from a real Kalshi market object (a demo capture, brought to the October 2026 shape)
and a verbatim production ticker frame, the strategies break objects the way real data does:
negative sizes (seen on determined markets), up to 6 decimals in dollar strings, enum values
Kalshi does not document, unexpected keys, missing optional keys, and numbers where strings
belong. Pages mix such objects with valid ones (and a few that cannot be read at all); every
valid object must still arrive, unchanged, and every odd one as far as it can be.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kalshi_pipeline.kalshi.messages import (
    Market,
    Tick,
    decode_frame,
    decode_market,
    decode_markets_page,
    decode_tick,
)

# Fortuna `markets__single.json` (demo, 2026-06), as Kalshi's documentation quotes it, with
# today's fields: `settlement_bounds_type` and `exchange_index` added, `liquidity_dollars`,
# `response_price_units` and `fractional_trading_enabled` gone.
REAL_MARKET: dict[str, Any] = {
    "can_close_early": True,
    "close_time": "2026-06-25T16:00:00Z",
    "created_time": "2026-06-11T05:12:22.338653Z",
    "event_ticker": "KXWTACHALLENGERMATCH-26JUN11JIMLEP",
    "exchange_index": 3,
    "expected_expiration_time": "2026-06-11T19:00:00Z",
    "expiration_time": "2026-06-25T16:00:00Z",
    "expiration_value": "",
    "last_price_dollars": "0.9900",
    "latest_expiration_time": "2026-06-25T16:00:00Z",
    "market_type": "binary",
    "no_ask_dollars": "0.5300",
    "no_bid_dollars": "0.4800",
    "notional_value_dollars": "1.0000",
    "open_interest_fp": "2.00",
    "open_time": "2026-06-11T05:39:29Z",
    "previous_price_dollars": "0.0000",
    "price_level_structure": "linear_cent",
    "price_ranges": [{"end": "1.0000", "start": "0.0000", "step": "0.0100"}],
    "result": "",
    "settlement_bounds_type": "default",
    "settlement_timer_seconds": 60,
    "status": "active",
    "strike_type": "structured",
    "ticker": "KXWTACHALLENGERMATCH-26JUN11JIMLEP-LEP",
    "title": "Will Jimenez win?",
    "updated_time": "2026-06-11T05:39:31.28563Z",
    "volume_24h_fp": "1.00",
    "volume_fp": "2.00",
    "yes_ask_dollars": "0.5200",
    "yes_ask_size_fp": "3.00",
    "yes_bid_dollars": "0.4700",
    "yes_bid_size_fp": "3.00",
    "yes_sub_title": "Jimenez",
}

# a verbatim prod ticker frame, with October's envelope key
REAL_TICKER: dict[str, Any] = {
    "type": "ticker",
    "sid": 6,
    "sending_ts_ms": 1789966800012,
    "msg": {
        "market_id": "4ac7cb26-aacc-420e-860e-5e7f054d8aa8",
        "market_ticker": "KXCRYPTOLEAD15M-26SEP210100-XRP",
        "price_dollars": "0.0100",
        "yes_bid_dollars": "0.0000",
        "yes_ask_dollars": "0.0100",
        "volume_fp": "759.86",
        "open_interest_fp": "666.18",
        "dollar_volume": 379,
        "dollar_open_interest": 333,
        "yes_bid_size_fp": "0.00",
        "yes_ask_size_fp": "78.00",
        "last_trade_size_fp": "0.09",
        "ts": 1789966800,
        "ts_ms": 1789966800000,
        "time": "2026-09-21T05:00:00Z",
    },
}

MARKET_SIZES = ("yes_bid_size_fp", "yes_ask_size_fp", "volume_fp", "open_interest_fp")
MARKET_DOLLARS = ("last_price_dollars", "yes_bid_dollars", "yes_ask_dollars")
MARKET_ENUMS = ("status", "market_type", "result", "settlement_bounds_type", "strike_type")
TICKER_SIZES = ("yes_bid_size_fp", "yes_ask_size_fp", "last_trade_size_fp", "volume_fp")
TICKER_DOLLARS = ("price_dollars", "yes_bid_dollars", "yes_ask_dollars")

TOLERANT = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])

negative_sizes = st.decimals(
    min_value=Decimal("-100000"), max_value=Decimal("-0.01"), places=2
).map(lambda d: f"{d:.2f}")
six_decimal_dollars = st.integers(min_value=0, max_value=1_000_000).map(
    lambda n: f"{Decimal(n) / 1_000_000:.6f}"
)
unknown_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@st.composite
def odd_market(draw: st.DrawFn, ticker: str) -> dict[str, Any]:
    """The real market, broken in one to four ways real data breaks the spec."""
    m = dict(REAL_MARKET, ticker=ticker)
    kinds = draw(
        st.lists(
            st.sampled_from(["negative", "six", "enum", "extra", "missing", "number"]),
            min_size=1,
            max_size=4,
        )
    )
    for kind in kinds:
        if kind == "negative":
            m[draw(st.sampled_from(MARKET_SIZES))] = draw(negative_sizes)
        elif kind == "six":
            m[draw(st.sampled_from(MARKET_DOLLARS))] = draw(six_decimal_dollars)
        elif kind == "enum":
            m[draw(st.sampled_from(MARKET_ENUMS))] = draw(unknown_words)
        elif kind == "extra":
            m[draw(unknown_words.filter(lambda k: k not in REAL_MARKET))] = draw(json_values)
        elif kind == "missing":
            m.pop(draw(st.sampled_from(sorted(k for k in m if k != "ticker"))), None)
        else:
            key = draw(st.sampled_from(MARKET_DOLLARS + MARKET_SIZES))
            m[key] = float(draw(st.decimals(min_value=0, max_value=1, places=2)))
    return m


@st.composite
def pages(draw: st.DrawFn) -> tuple[list[Any], set[str], set[str], int]:
    """A page of valid, odd and unreadable objects in random order."""
    n_valid = draw(st.integers(min_value=1, max_value=12))
    n_odd = draw(st.integers(min_value=1, max_value=6))
    n_unreadable = draw(st.integers(min_value=0, max_value=2))
    valid = [dict(REAL_MARKET, ticker=f"KX-VALID-{i}") for i in range(n_valid)]
    odd = [draw(odd_market(f"KX-ODD-{i}")) for i in range(n_odd)]
    unreadable: list[Any] = [
        draw(st.sampled_from([{"title": "no ticker"}, 42, "KX-TEXT", [1, 2], {"ticker": 7}]))
        for _ in range(n_unreadable)
    ]
    objects = draw(st.permutations(valid + odd + unreadable))
    return (
        objects,
        {m["ticker"] for m in valid},
        {m["ticker"] for m in odd},
        n_unreadable,
    )


def _alone(market: dict[str, Any]) -> Market:
    return decode_market(json.dumps({"market": market}).encode())


@TOLERANT
@given(pages())
def test_every_valid_market_of_a_page_arrives_unchanged_and_every_odd_one_is_kept(
    page: tuple[list[Any], set[str], set[str], int],
) -> None:
    objects, valid, odd, unreadable = page
    body = json.dumps({"markets": objects, "cursor": "c"}).encode()
    decoded = decode_markets_page(body)
    by_ticker = {m.ticker: m for m in decoded.markets}
    assert set(by_ticker) == valid | odd
    assert len(decoded.skipped) == unreadable
    assert decoded.cursor == "c"
    reference = _alone(dict(REAL_MARKET, ticker="KX-VALID-0"))
    for ticker in valid:
        market = by_ticker[ticker]
        assert market.notes == ()
        assert market == _with_ticker(reference, ticker)
    for ticker in odd:
        # stored as far as it can be: never a price outside 0..1 nor more than 4 places
        market = by_ticker[ticker]
        for price in (market.last_price, market.yes_bid, market.yes_ask):
            assert price is None or (0 <= price <= 1 and price == round(price, 4))


def _with_ticker(market: Market, ticker: str) -> Market:
    import msgspec

    return msgspec.structs.replace(market, ticker=ticker)


@st.composite
def odd_ticker_frames(draw: st.DrawFn) -> dict[str, Any]:
    frame = json.loads(json.dumps(REAL_TICKER))
    msg = frame["msg"]
    kinds = draw(
        st.lists(
            st.sampled_from(["negative", "six", "extra", "envelope", "missing", "number"]),
            min_size=1,
            max_size=4,
        )
    )
    for kind in kinds:
        if kind == "negative":
            msg[draw(st.sampled_from(TICKER_SIZES))] = draw(negative_sizes)
        elif kind == "six":
            msg[draw(st.sampled_from(TICKER_DOLLARS))] = draw(six_decimal_dollars)
        elif kind == "extra":
            msg[draw(unknown_words.filter(lambda k: k not in msg))] = draw(json_values)
        elif kind == "envelope":
            frame[draw(unknown_words.filter(lambda k: k not in frame))] = draw(json_values)
        elif kind == "missing":
            msg.pop(draw(st.sampled_from(sorted(k for k in msg if k != "market_ticker"))), None)
        else:
            key = draw(st.sampled_from(TICKER_DOLLARS + TICKER_SIZES))
            msg[key] = float(draw(st.decimals(min_value=0, max_value=1, places=2)))
    return frame


@TOLERANT
@given(odd_ticker_frames())
def test_an_odd_ticker_frame_still_gives_its_tick_on_both_decode_paths(
    frame: dict[str, Any],
) -> None:
    raw = json.dumps(frame, separators=(",", ":")).encode()
    fast = decode_tick(raw)
    general = decode_frame(raw)
    assert isinstance(fast, Tick)
    assert fast == general
    assert fast.market_ticker == REAL_TICKER["msg"]["market_ticker"]
    assert fast.sent_ts_ms == REAL_TICKER["sending_ts_ms"]
    for size in (fast.yes_bid_size, fast.yes_ask_size, fast.last_trade_size, fast.volume):
        assert size is None or size == round(size, 2)


def test_the_real_frame_and_market_decode_without_a_note() -> None:
    tick = decode_tick(json.dumps(REAL_TICKER).encode())
    assert tick.notes == ()
    assert tick.sent_ts_ms - tick.exchange_ts_ms == 12  # type: ignore[operator]
    market = _alone(REAL_MARKET)
    assert market.notes == ()
    assert (market.settlement_bounds_type, market.exchange_index) == ("default", 3)

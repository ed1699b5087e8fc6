"""The simulator's objects held to Kalshi's protocol as of October 2026 (OpenAPI 3.34.0).

Every expectation here is written from the list of Kalshi's changes from August to October 2026
(market, event, series and exchange-status objects; the WebSocket envelope; lifecycle payloads;
exchange shards), not derived from what our own decoder accepts: the simulator must look like
Kalshi even where our client would not notice the difference.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import requests

from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.simulator.support import TestSigner, command, recv, ws_connect

# --------------------------------------------------------------------------- expectations

MARKET_REQUIRED = {
    "ticker",
    "event_ticker",
    "market_type",
    "yes_sub_title",
    "no_sub_title",
    "created_time",
    "updated_time",
    "open_time",
    "close_time",
    "latest_expiration_time",
    "settlement_timer_seconds",
    "status",
    "notional_value_dollars",
    "yes_bid_dollars",
    "yes_ask_dollars",
    "no_bid_dollars",
    "no_ask_dollars",
    "yes_bid_size_fp",
    "yes_ask_size_fp",
    "last_price_dollars",
    "previous_yes_bid_dollars",
    "previous_yes_ask_dollars",
    "previous_price_dollars",
    "volume_fp",
    "volume_24h_fp",
    "open_interest_fp",
    "result",
    "can_close_early",
    "expiration_value",
    "rules_primary",
    "rules_secondary",
    "price_level_structure",
    "price_ranges",
    # Oct 1 (OpenAPI 3.31.0): required on every market object.
    "settlement_bounds_type",
    # Exchange sharding: on markets, events, series and lifecycle frames.
    "exchange_index",
}
MARKET_REMOVED = {
    "liquidity_dollars",  # removed Oct 1, marked breaking
    "response_price_units",
    "tick_size",
    "fractional_trading_enabled",
    # legacy integer cents and counts, gone since Mar 12, 2026
    "liquidity",
    "yes_bid",
    "yes_ask",
    "no_bid",
    "no_ask",
    "last_price",
    "previous_yes_bid",
    "previous_yes_ask",
    "previous_price",
    "notional_value",
    "volume",
    "volume_24h",
    "open_interest",
    "category",
    "risk_limit_cents",
}
MARKET_STATUSES = {
    "initialized",
    "inactive",
    "active",
    "closed",
    "determined",
    "disputed",
    "amended",
    "finalized",
}
SETTLEMENT_BOUNDS = {"default", "floor"}
EVENT_REQUIRED = {
    "event_ticker",
    "series_ticker",
    "sub_title",
    "title",
    "collateral_return_type",
    "mutually_exclusive",
    "exchange_index",
}
EVENT_REMOVED = {"available_on_brokers"}  # removed Sep 10
SERIES_REQUIRED = {
    "ticker",
    "frequency",
    "title",
    "category",
    "categories",  # required list since Sep 17; the primary `category` stays
    "tags",
    "settlement_sources",
    "contract_url",
    "contract_terms_url",
    "fee_type",
    "fee_multiplier",
    "additional_prohibitions",
    "exchange_index",
}
SHARD_STATUS_KEYS = {
    "exchange_index",
    "description",
    "exchange_active",
    "trading_active",
    "intra_exchange_transfers_active",
}
COLLATERAL_RETURN_TYPES = {"MECNET", "DIRECNET", ""}
DOLLARS_RE = re.compile(r"^\d+\.\d{4,6}$")  # 4 places on the wire today, up to 6 allowed
FP_RE = re.compile(r"^\d+\.\d{2}$")


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def expected_shard(series: dict[str, Any]) -> int:
    """Where new events open: crypto and commodities on 2; tennis, baseball, basketball on 3;
    combos on 1 (the simulator lists none); everything else on the default shard 0."""
    if series["category"] in ("Crypto", "Commodities"):
        return 2
    title = series["title"].lower()
    if series["category"] == "Sports" and any(
        sport in title for sport in ("tennis", "baseball", "basketball")
    ):
        return 3
    return 0


def check_dollars(value: object, what: str) -> Decimal:
    assert isinstance(value, str) and DOLLARS_RE.match(value), (what, value)
    return Decimal(value)


def check_market(m: dict[str, Any]) -> None:
    ticker = m.get("ticker")
    missing = MARKET_REQUIRED - set(m)
    assert not missing, (ticker, sorted(missing))
    present = MARKET_REMOVED & set(m)
    assert not present, (ticker, sorted(present))
    assert m["status"] in MARKET_STATUSES, (ticker, m["status"])
    assert m["market_type"] in ("binary", "scalar")
    assert m["result"] in ("yes", "no", "scalar", "")
    assert is_int(m["exchange_index"]) and m["exchange_index"] >= 0
    assert is_int(m["settlement_timer_seconds"])
    assert isinstance(m["can_close_early"], bool)
    for key, value in m.items():
        if key.endswith("_dollars"):
            check_dollars(value, f"{ticker}.{key}")
        elif key.endswith("_fp"):
            assert isinstance(value, str) and FP_RE.match(value), (ticker, key, value)
    for price in (
        "yes_bid_dollars",
        "yes_ask_dollars",
        "no_bid_dollars",
        "no_ask_dollars",
        "last_price_dollars",
    ):
        assert Decimal(0) <= Decimal(m[price]) <= Decimal(1), (ticker, price)
    for rng in m["price_ranges"]:
        assert set(rng) == {"start", "end", "step"}
        assert all(DOLLARS_RE.match(v) for v in rng.values())
    assert m["settlement_bounds_type"] in SETTLEMENT_BOUNDS, (ticker, m["settlement_bounds_type"])
    if m["settlement_bounds_type"] == "floor":
        floor = check_dollars(m.get("settlement_floor_dollars"), f"{ticker} floor")
        assert Decimal(0) <= floor < Decimal(1)
    else:
        assert "settlement_floor_dollars" not in m, ticker


def get(sim: SimulatorProcess, path: str, **params: Any) -> Any:
    resp = requests.get(f"{sim.rest_url}{path}", params=params, timeout=20)
    assert resp.status_code == 200, (path, resp.status_code, resp.text[:200])
    return resp.json()


def every_market(sim: SimulatorProcess) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = get(sim, "/markets", limit=1000, cursor=cursor)
        out += page["markets"]
        cursor = page["cursor"]
        if not cursor:
            return out


# --------------------------------------------------------------------------- REST objects


def test_every_market_has_the_october_shape(sim: SimulatorProcess) -> None:
    markets = every_market(sim)
    for m in markets:
        check_market(m)
    bounds = [m["settlement_bounds_type"] for m in markets]
    # Floors are "not live yet" on Kalshi: a few floor markets, the rest default.
    assert 0 < bounds.count("floor") < bounds.count("default")
    single = get(sim, f"/markets/{markets[0]['ticker']}")["market"]
    check_market(single)


def test_events_series_and_markets_agree_on_their_shard(sim: SimulatorProcess) -> None:
    series = {s["ticker"]: s for s in get(sim, "/series")["series"]}
    for s in series.values():
        missing = SERIES_REQUIRED - set(s)
        assert not missing, (s["ticker"], sorted(missing))
        assert isinstance(s["categories"], list) and s["categories"]
        assert all(isinstance(c, str) and c for c in s["categories"])
        assert s["fee_type"] in ("quadratic", "quadratic_with_maker_fees", "flat")
        assert is_int(s["exchange_index"])
        assert s["exchange_index"] == expected_shard(s), s["ticker"]
    assert {s["exchange_index"] for s in series.values()} >= {0, 2, 3}
    one = get(sim, f"/series/{next(iter(series))}")["series"]
    assert set(one) >= SERIES_REQUIRED

    events: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = get(sim, "/events", limit=200, cursor=cursor, with_nested_markets="true")
        events += page["events"]
        cursor = page["cursor"]
        if not cursor:
            break
    assert events
    for e in events:
        missing = EVENT_REQUIRED - set(e)
        assert not missing, (e["event_ticker"], sorted(missing))
        assert not EVENT_REMOVED & set(e), e["event_ticker"]
        assert e["collateral_return_type"] in COLLATERAL_RETURN_TYPES
        assert e["exchange_index"] == series[e["series_ticker"]]["exchange_index"]
        for m in e["markets"]:
            check_market(m)
            assert m["exchange_index"] == e["exchange_index"], m["ticker"]
    single = get(sim, f"/events/{events[0]['event_ticker']}")
    assert set(single["event"]) >= EVENT_REQUIRED and not EVENT_REMOVED & set(single["event"])


def test_exchange_status_has_an_entry_per_shard(sim: SimulatorProcess) -> None:
    status = get(sim, "/exchange/status")
    assert isinstance(status["exchange_active"], bool)
    assert isinstance(status["trading_active"], bool)
    shards = status["exchange_index_statuses"]
    assert isinstance(shards, list) and shards
    for entry in shards:
        assert set(entry) >= SHARD_STATUS_KEYS, entry
        assert is_int(entry["exchange_index"])
        assert isinstance(entry["description"], str) and entry["description"]
        for flag in ("exchange_active", "trading_active", "intra_exchange_transfers_active"):
            assert isinstance(entry[flag], bool)
    indexes = [entry["exchange_index"] for entry in shards]
    assert len(indexes) == len(set(indexes))
    used = {m["exchange_index"] for m in every_market(sim)}
    assert used <= set(indexes), "a market sits on a shard the status does not report"


# --------------------------------------------------------------------------- WebSocket


def test_data_frames_carry_sending_ts_ms_and_lifecycle_payloads_are_real(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(markets=40, rate=50, market_lifetime="3s", extra_args=["--hourly-strikes", "2"])
    frames: list[dict[str, Any]] = []

    async def run() -> None:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            body = {"channels": ["market_lifecycle_v2", "ticker", "trade"]}
            await command(ws, {"id": 1, "cmd": "subscribe", "params": body})
            kinds: set[str] = set()
            while not {"created", "determined", "settled", "ticker", "event_lifecycle"} <= kinds:
                frame = await recv(ws, 10)
                frames.append(frame)
                kinds.add(frame["msg"].get("event_type") or frame["type"])
        finally:
            await ws.close()

    asyncio.run(run())
    data = [f for f in frames if f["type"] not in ("subscribed", "ok")]
    for f in data:
        assert is_int(f.get("sending_ts_ms")), f
        assert {"type", "sid", "msg"} <= set(f)
    for f in data:
        msg = f["msg"]
        if f["type"] == "ticker":
            assert is_int(msg["dollar_volume"]) and is_int(msg["dollar_open_interest"])
            assert msg["ts_ms"] <= f["sending_ts_ms"]
        elif f["type"] == "event_lifecycle":
            assert is_int(msg["exchange_index"])
            assert msg["collateral_return_type"] in COLLATERAL_RETURN_TYPES
            event = get(sim, f"/events/{msg['event_ticker']}")["event"]
            assert event["exchange_index"] == msg["exchange_index"]
        elif f["type"] == "market_lifecycle_v2":
            kind = msg["event_type"]
            if kind == "created":
                assert is_int(msg["exchange_index"])
                assert isinstance(msg["price_level_structure"], str)
                assert msg["price_level_structure"] or msg["price_ranges"]
                market = get(sim, f"/markets/{msg['market_ticker']}")["market"]
                assert market["exchange_index"] == msg["exchange_index"]
            elif kind == "determined":
                assert msg["result"] in ("yes", "no", "scalar")
                check_dollars(msg["settlement_value"], "determined settlement_value")
                assert is_int(msg["determination_ts"])
            elif kind == "settled":
                assert set(msg) == {"market_ticker", "event_type", "settled_ts"}, msg
                assert is_int(msg["settled_ts"])
    assert any(f["msg"].get("event_type") == "determined" for f in data)
    json.dumps(frames)  # every frame was plain JSON

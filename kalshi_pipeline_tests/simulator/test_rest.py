"""REST market data (§4): pagination, filters, objects, errors, and agreement with the stream."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
import requests

from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.simulator.conftest import SHARED_MARKETS
from kalshi_pipeline_tests.simulator.support import TestSigner, command, recv, ws_connect

NOT_FOUND = {"error": {"code": "not_found", "message": "not found"}}
LIMIT_OVER_MAX = {
    "msg": "Parameter validation failed for GetMarkets: Key: 'GetMarketsParams.Limit' "
    "Error:Field validation for 'Limit' failed on the 'lte' tag"
}
MARKET_REQUIRED = (
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
    "title",
)
DOLLARS_RE = re.compile(r"^[01]\.\d{4}$")
FP_RE = re.compile(r"^\d+\.\d{2}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$")
TICKER_RE = re.compile(r"^[A-Z0-9][A-Z0-9.-]*$")


def get(sim: SimulatorProcess, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{sim.rest_url}{path}", params=params, timeout=20)


def all_markets(sim: SimulatorProcess, **params: Any) -> tuple[list[dict[str, Any]], int]:
    out: list[dict[str, Any]] = []
    cursor = ""
    pages = 0
    while True:
        body = get(sim, "/markets", limit=1000, cursor=cursor, **params).json()
        assert set(body) == {"markets", "cursor"}
        out.extend(body["markets"])
        pages += 1
        cursor = body["cursor"]
        if cursor == "":
            return out, pages
        assert pages < 100


def test_paging_with_limit_1000_returns_every_market_once(sim: SimulatorProcess) -> None:
    before = sim.stats()["markets_total"]
    markets, pages = all_markets(sim)
    tickers = [m["ticker"] for m in markets]
    assert len(tickers) == len(set(tickers)), "a market came twice"
    assert len(tickers) >= before >= SHARED_MARKETS
    assert pages == -(-len(tickers) // 1000)
    keys = [(m["created_time"], m["ticker"]) for m in markets]
    # RFC3339 strings of one width do not sort, so compare as ordered pairs of parsed values.
    parsed = [(_micros(t), ticker) for t, ticker in keys]
    assert parsed == sorted(parsed, reverse=True), "not created_time desc, ticker desc"
    assert all(TICKER_RE.match(t) for t in tickers)


def _micros(t: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1_000_000)


def test_limit_over_1000_is_400_with_the_bare_body(sim: SimulatorProcess) -> None:
    resp = get(sim, "/markets", limit=1001)
    assert resp.status_code == 400
    assert resp.json() == LIMIT_OVER_MAX
    assert get(sim, "/markets", limit=-1).status_code == 400
    assert set(get(sim, "/markets", limit="ten").json()) == {"msg"}


def test_default_limit_is_100(sim: SimulatorProcess) -> None:
    body = get(sim, "/markets").json()
    assert len(body["markets"]) == 100
    assert body["cursor"]


def test_garbage_cursor_gives_the_first_page(sim: SimulatorProcess) -> None:
    first = get(sim, "/markets", limit=50, status="open").json()
    for garbage in ("garbage!!", "CgwIuKKp0QYQ", "%%%", "bm90LWEtY3Vyc29y"):
        again = get(sim, "/markets", limit=50, status="open", cursor=garbage).json()
        assert [m["ticker"] for m in again["markets"]] == [m["ticker"] for m in first["markets"]]


@pytest.mark.parametrize(
    ("status_filter", "statuses"),
    [
        ("open", {"active"}),
        ("unopened", {"initialized"}),
        ("paused", {"inactive"}),
        ("closed", {"closed", "determined", "disputed", "amended"}),
        ("settled", {"finalized"}),
    ],
)
def test_status_filter_maps_to_market_statuses(
    sim: SimulatorProcess, status_filter: str, statuses: set[str]
) -> None:
    markets, _ = all_markets(sim, status=status_filter)
    assert markets, f"nothing for status={status_filter}"
    assert {m["status"] for m in markets} <= statuses
    if status_filter == "open":
        assert len(markets) >= SHARED_MARKETS - 20


def test_no_status_filter_includes_settled_markets(sim: SimulatorProcess) -> None:
    markets, _ = all_markets(sim)
    assert {"active", "initialized", "inactive", "finalized"} <= {m["status"] for m in markets}


def test_bad_status_and_mve_values_are_400(sim: SimulatorProcess) -> None:
    for params in ({"status": "active"}, {"status": "open,closed"}, {"mve_filter": "both"}):
        resp = get(sim, "/markets", **params)
        assert resp.status_code == 400, params
        assert set(resp.json()) == {"msg"}


def test_mve_filter(sim: SimulatorProcess) -> None:
    assert get(sim, "/markets", mve_filter="only").json() == {"markets": [], "cursor": ""}
    assert len(get(sim, "/markets", mve_filter="exclude", limit=5).json()["markets"]) == 5


def test_timestamp_filters_and_their_compatibility(sim: SimulatorProcess) -> None:
    for params in (
        {"min_close_ts": 1, "status": "open"},
        {"min_created_ts": 1, "status": "closed"},
        {"min_settled_ts": 1, "status": "open"},
        {"min_created_ts": 1, "max_close_ts": 2**40},
        {"min_updated_ts": 1, "status": "open"},
        {"min_updated_ts": 1, "tickers": "X"},
        {"min_updated_ts": 1, "series_ticker": "KXSIMTEMP"},
        {"max_updated_ts": 2**40, "status": "open"},
        {"max_updated_ts": "soon"},
    ):
        resp = get(sim, "/markets", **params)
        assert resp.status_code == 400, params
        assert "error" in resp.json() or "msg" in resp.json()
    ok = get(sim, "/markets", min_updated_ts=1, series_ticker="KXSIMTEMP", mve_filter="exclude")
    assert ok.status_code == 200
    assert {m["ticker"].split("-")[0] for m in ok.json()["markets"]} == {"KXSIMTEMP"}
    # min_updated_ts and max_updated_ts make a closed window (seconds) for metadata polling.
    one = ok.json()["markets"][0]
    updated = _micros(one["updated_time"]) // 1_000_000
    window = get(sim, "/markets", min_updated_ts=updated, max_updated_ts=updated, limit=1000)
    in_window = window.json()["markets"]
    assert one["ticker"] in [m["ticker"] for m in in_window]
    assert all(_micros(m["updated_time"]) // 1_000_000 == updated for m in in_window)
    before = get(sim, "/markets", max_updated_ts=updated - 1, limit=1000).json()["markets"]
    assert one["ticker"] not in [m["ticker"] for m in before]
    settled = get(sim, "/markets", min_settled_ts=1, status="settled").json()["markets"]
    assert settled and all(m["status"] == "finalized" for m in settled)
    far = get(sim, "/markets", min_close_ts=4_000_000_000, limit=10).json()
    assert far == {"markets": [], "cursor": ""}
    one = get(sim, "/markets", status="open", limit=1).json()["markets"][0]
    created = _micros(one["created_time"]) // 1_000_000
    window = get(sim, "/markets", min_created_ts=created, max_created_ts=created, status="open")
    assert one["ticker"] in [m["ticker"] for m in window.json()["markets"]]


def test_ticker_event_and_series_filters(sim: SimulatorProcess) -> None:
    some = get(sim, "/markets", status="open", limit=3).json()["markets"]
    tickers = [m["ticker"] for m in some]
    body = get(sim, "/markets", tickers=",".join(tickers)).json()
    assert sorted(m["ticker"] for m in body["markets"]) == sorted(tickers)
    event = some[0]["event_ticker"]
    in_event = get(sim, "/markets", event_ticker=event).json()["markets"]
    assert in_event and {m["event_ticker"] for m in in_event} == {event}
    in_series = get(sim, "/markets", series_ticker="KXSIMHOURLY", limit=1000).json()["markets"]
    assert in_series and {m["ticker"].split("-")[0] for m in in_series} == {"KXSIMHOURLY"}


def test_market_object_has_the_current_fields_and_units(sim: SimulatorProcess) -> None:
    markets = get(sim, "/markets", limit=200).json()["markets"]
    for m in markets:
        missing = [f for f in MARKET_REQUIRED if f not in m]
        assert not missing, (m["ticker"], missing)
        for f in m:
            if f.endswith("_dollars"):
                assert DOLLARS_RE.match(m[f]), (f, m[f])
            if f.endswith("_fp"):
                assert FP_RE.match(m[f]), (f, m[f])
            if f.endswith("_time"):
                assert TIME_RE.match(m[f]), (f, m[f])
        bid, ask = m["yes_bid_dollars"], m["yes_ask_dollars"]
        assert float(bid) < float(ask)
        assert f"{1 - float(ask):.4f}" == m["no_bid_dollars"]
        assert f"{1 - float(bid):.4f}" == m["no_ask_dollars"]
        assert m["price_ranges"] == [{"end": "1.0000", "start": "0.0000", "step": "0.0100"}]


def test_single_market_and_404(sim: SimulatorProcess) -> None:
    listed = get(sim, "/markets", limit=1).json()["markets"][0]
    body = get(sim, f"/markets/{listed['ticker']}").json()
    assert set(body) == {"market"}
    assert body["market"]["ticker"] == listed["ticker"]
    resp = get(sim, "/markets/NOPE-26JAN01-T1")
    assert resp.status_code == 404
    assert resp.json() == NOT_FOUND
    resp = get(sim, "/no/such/path")
    assert resp.status_code == 404
    assert resp.json() == NOT_FOUND


def test_exchange_status(sim: SimulatorProcess) -> None:
    body = get(sim, "/exchange/status").json()
    assert body["exchange_active"] is True and body["trading_active"] is True
    assert [s["exchange_index"] for s in body["exchange_index_statuses"]] == [0, 1, 2, 3]


def test_events_paging_nesting_and_limits(sim: SimulatorProcess) -> None:
    body = get(sim, "/events").json()
    assert set(body) == {"events", "cursor"}
    assert len(body["events"]) == min(200, sim.stats()["events_total"])
    assert "markets" not in body["events"][0]
    nested = get(sim, "/events", limit=5, with_nested_markets="true").json()["events"]
    assert all(e["markets"] for e in nested)
    assert all(m["event_ticker"] == e["event_ticker"] for e in nested for m in e["markets"])
    seen: list[str] = []
    cursor = ""
    while True:
        page = get(sim, "/events", limit=37, cursor=cursor).json()
        seen += [e["event_ticker"] for e in page["events"]]
        cursor = page["cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) >= sim.stats()["events_total"] - 1
    resp = get(sim, "/events", limit=201)
    assert resp.status_code == 400
    assert "GetEventsParams.Limit" in resp.json()["msg"]
    hourly = get(sim, "/events", series_ticker="KXSIMHOURLY", status="open").json()["events"]
    assert hourly and all(e["series_ticker"] == "KXSIMHOURLY" for e in hourly)
    one = get(sim, f"/events/{hourly[0]['event_ticker']}").json()
    assert one["event"]["event_ticker"] == hourly[0]["event_ticker"]
    assert one["markets"]
    assert get(sim, "/events/NOPE-1").json() == NOT_FOUND


def test_series(sim: SimulatorProcess) -> None:
    series = get(sim, "/series").json()["series"]
    tickers = {s["ticker"] for s in series}
    assert "KXSIMHOURLY" in tickers
    one = get(sim, "/series/KXSIMHOURLY").json()["series"]
    assert one["frequency"] == "hourly"
    assert get(sim, "/series/NOPE").status_code == 404


def test_orderbook_has_depth_and_refuses_a_bad_depth(sim: SimulatorProcess) -> None:
    m = get(sim, "/markets", status="open", limit=1).json()["markets"][0]
    book = get(sim, f"/markets/{m['ticker']}/orderbook").json()["orderbook_fp"]
    assert set(book) == {"yes_dollars", "no_dollars"}
    assert len(book["yes_dollars"]) + len(book["no_dollars"]) > 2  # more than the L1
    top = get(sim, f"/markets/{m['ticker']}/orderbook", depth=1).json()["orderbook_fp"]
    assert len(top["yes_dollars"]) <= 1 and len(top["no_dollars"]) <= 1
    for depth in (-1, 101):
        resp = get(sim, f"/markets/{m['ticker']}/orderbook", depth=depth)
        assert resp.status_code == 400 and "GetMarketOrderbookParams.Depth" in resp.json()["msg"]


def test_orderbooks_of_several_markets_need_no_signature(sim: SimulatorProcess) -> None:
    tickers = [m["ticker"] for m in get(sim, "/markets", status="open", limit=3).json()["markets"]]
    resp = requests.get(
        f"{sim.rest_url}/markets/orderbooks",
        params=[("tickers", t) for t in [*tickers, "NOPE-26JAN01-T1"]],
        timeout=20,
    )
    assert resp.status_code == 200
    books = resp.json()["orderbooks"]
    assert [b["ticker"] for b in books] == tickers
    for b in books:
        assert set(b["orderbook_fp"]) == {"yes_dollars", "no_dollars"}
        for price, size in b["orderbook_fp"]["yes_dollars"] + b["orderbook_fp"]["no_dollars"]:
            assert DOLLARS_RE.match(price) and FP_RE.match(size)
    for bad in ({}, {"tickers": ",".join(f"KX-{i}" for i in range(101))}):
        resp = get(sim, "/markets/orderbooks", **bad)
        assert resp.status_code == 400, bad
        assert "GetMarketOrderbooksParams.Tickers" in resp.json()["msg"]


def test_rest_shows_every_change_already_streamed(
    sim: SimulatorProcess, signer: TestSigner
) -> None:
    """A REST read made after a ticker frame arrived shows that frame's state or a later one."""
    fields = (
        ("yes_bid_dollars", "yes_bid_dollars"),
        ("yes_ask_dollars", "yes_ask_dollars"),
        ("yes_bid_size_fp", "yes_bid_size_fp"),
        ("yes_ask_size_fp", "yes_ask_size_fp"),
        ("price_dollars", "last_price_dollars"),
        ("volume_fp", "volume_fp"),
        ("open_interest_fp", "open_interest_fp"),
    )

    async def run() -> None:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            await command(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["ticker"]}})
            checked = 0
            while checked < 5:
                frame = await recv(ws)
                if frame["type"] != "ticker":
                    continue
                msg = frame["msg"]
                resp = await asyncio.to_thread(
                    requests.get, f"{sim.rest_url}/markets/{msg['market_ticker']}", timeout=10
                )
                market = resp.json()["market"]
                later = [msg]
                drain_until = asyncio.get_running_loop().time() + 0.5
                while asyncio.get_running_loop().time() < drain_until:
                    try:
                        f = await recv(ws, 0.1)
                    except TimeoutError:
                        continue
                    if f["type"] == "ticker" and f["msg"]["market_ticker"] == msg["market_ticker"]:
                        later.append(f["msg"])
                rest_view = tuple(market[r] for _, r in fields)
                assert rest_view in [tuple(m[w] for w, _ in fields) for m in later], (
                    json.dumps(market),
                    later,
                )
                checked += 1
        finally:
            await ws.close()

    asyncio.run(run())

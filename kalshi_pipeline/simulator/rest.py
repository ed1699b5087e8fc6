"""REST under `/trade-api/v2` (kalshi-protocol.md §4): market data, the account endpoints that
clients call first (`/portfolio/balance`, `/account/limits`, both signed), and the gateway
behaviour in front of them (faults, signatures, the read token bucket, 404s).

Pages run in `created_time` descending, then ticker descending; the cursor is the base64url of
the last item's (created µs, ticker) and a cursor that does not decode gives the first page.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from kalshi_pipeline.simulator.auth import AuthFailure, has_auth_headers
from kalshi_pipeline.simulator.config import READ_BUCKET_SECONDS
from kalshi_pipeline.simulator.model import FILTER_STATUSES, SHARDS, Event, Market
from kalshi_pipeline.simulator.orderbook import rest_book
from kalshi_pipeline.simulator.runtime import Runtime
from kalshi_pipeline.simulator.wire import dumps

API = "/trade-api/v2"
TOO_MANY_REQUESTS = b'{"error": "too many requests"}'
NOT_FOUND = b'{"error":{"code":"not_found","message":"not found"}}'
METHOD_NOT_ALLOWED = b'{"error":{"code":"method_not_allowed","message":"method not allowed"}}'
FAULT_BODIES = {
    500: b'{"error":{"code":"internal_server_error","message":"internal server error"}}',
    502: b'{"code":"bad_gateway","message":"bad gateway","details":"simulated upstream failure"}',
    503: b'{"msg":"service unavailable"}',
}
"""One per error-body shape (nested, flat, bare) so clients meet all three."""
PUBLIC_ROUTES = frozenset(
    {
        "get_markets",
        "get_market",
        "get_orderbook",
        "get_orderbooks",
        "get_trades",
        "get_events",
        "get_event",
        "get_series_list",
        "get_series",
        "exchange_status",
        "exchange_schedule",
    }
)
MARKETS_MAX_LIMIT = 1000
EVENTS_MAX_LIMIT = 200
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    data = body if isinstance(body, bytes) else dumps(body)
    return web.Response(status=status, body=data, content_type="application/json")


class ParamError(Exception):
    """A 400 whose body is already decided."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.body = body


def _validation(endpoint: str, field: str, tag: str) -> ParamError:
    return ParamError(
        {
            "msg": f"Parameter validation failed for {endpoint}: Key: '{endpoint}Params.{field}' "
            f"Error:Field validation for '{field}' failed on the '{tag}' tag"
        }
    )


def _int_param(query: Any, name: str, endpoint: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ParamError(
            {
                "msg": f"Parameter validation failed for {endpoint}: invalid value {raw!r} "
                f"for {name}: expected an integer"
            }
        ) from None


def _limit(query: Any, endpoint: str, default: int, maximum: int) -> int:
    limit = _int_param(query, "limit", endpoint)
    if limit is None or limit == 0:
        return default
    if limit > maximum:
        raise _validation(endpoint, "Limit", "lte")
    if limit < 0:
        raise _validation(endpoint, "Limit", "gte")
    return limit


def _list_param(query: Any, name: str) -> list[str]:
    return [p.strip() for p in ",".join(query.getall(name, [])).split(",") if p.strip()]


def encode_cursor(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{key[0]}:{key[1]}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[int, str] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, ticker = raw.partition(":")
        if not ticker:
            return None
        return (int(created), ticker)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def page_desc(
    keys: list[tuple[int, str]],
    cursor: tuple[int, str] | None,
    limit: int,
    lookup: Callable[[str], Any],
    keep: Callable[[Any], bool],
) -> tuple[list[Any], str]:
    """One page from `keys` (ascending) read backwards from the cursor; cursor "" when done."""
    i = len(keys) if cursor is None else bisect.bisect_left(keys, cursor)
    out: list[Any] = []
    i -= 1
    while i >= 0 and len(out) < limit:
        item = lookup(keys[i][1])
        if keep(item):
            out.append(item)
        i -= 1
    more = False
    while i >= 0:
        if keep(lookup(keys[i][1])):
            more = True
            break
        i -= 1
    return out, encode_cursor(out[-1].sort_key()) if more and out else ""


TS_GROUPS = {
    "created": (("min_created_ts", "max_created_ts"), (None, "unopened", "open")),
    "close": (("min_close_ts", "max_close_ts"), (None, "closed")),
    "settled": (("min_settled_ts", "max_settled_ts"), (None, "settled")),
}


def _bad_filters(details: str) -> ParamError:
    return ParamError(
        {"error": {"code": "bad_request", "message": "bad request", "details": details}}
    )


def market_filter(query: Any) -> tuple[Callable[[Market], bool], list[str], list[str], bool]:
    """Validate `GET /markets` filters; returns (predicate, tickers, event tickers, none_match)."""
    endpoint = "GetMarkets"
    status = query.get("status") or None
    if status is not None and status not in FILTER_STATUSES:
        raise _validation(endpoint, "Status", "oneof")
    mve = query.get("mve_filter") or None
    if mve is not None and mve not in ("only", "exclude"):
        raise _validation(endpoint, "MveFilter", "oneof")
    tickers = _list_param(query, "tickers")
    events = _list_param(query, "event_ticker")
    series = query.get("series_ticker") or None
    ts = {
        name: _int_param(query, name, endpoint) for names, _ in TS_GROUPS.values() for name in names
    }
    min_updated = _int_param(query, "min_updated_ts", endpoint)
    max_updated = _int_param(query, "max_updated_ts", endpoint)
    used = [g for g, (names, _) in TS_GROUPS.items() if any(ts[n] is not None for n in names)]
    if min_updated is not None or max_updated is not None:
        others = used + (["status"] if status else []) + (["tickers"] if tickers else [])
        others += ["event_ticker"] if events else []
        if series and mve != "exclude":
            others.append("series_ticker without mve_filter=exclude")
        if mve == "only":
            others.append("mve_filter=only")
        if others:
            raise _bad_filters(
                f"min_updated_ts and max_updated_ts cannot be combined with {', '.join(others)}"
            )
    if len(used) > 1:
        raise _bad_filters(f"only one timestamp filter group may be used, got {used}")
    for group in used:
        allowed = TS_GROUPS[group][1]
        if status not in allowed:
            raise _bad_filters(f"{group} timestamp filters are not compatible with status={status}")
    statuses = FILTER_STATUSES[status] if status else None
    bounds: list[tuple[str, int, int]] = []
    for group, (names, _) in TS_GROUPS.items():
        lo, hi = ts[names[0]], ts[names[1]]
        if lo is not None or hi is not None:
            low = lo * 1_000_000 if lo is not None else -(2**62)
            high = hi * 1_000_000 + 999_999 if hi is not None else 2**62
            bounds.append((group, low, high))
    # The updated window is closed at both ends, in whole seconds.
    updated_low = min_updated * 1_000_000 if min_updated is not None else None
    updated_high = max_updated * 1_000_000 + 999_999 if max_updated is not None else None

    def keep(m: Market) -> bool:
        if statuses is not None and m.status not in statuses:
            return False
        if series is not None and m.series_ticker != series:
            return False
        for group, low, high in bounds:
            if group == "created":
                value: int | None = m.created_us
            elif group == "close":
                value = m.close_us
            else:
                value = m.settled_us
            if value is None or not low <= value <= high:
                return False
        if updated_low is not None and m.updated_us < updated_low:
            return False
        return updated_high is None or m.updated_us <= updated_high

    return keep, tickers, events, mve == "only"


def _keys_of(markets: Iterable[Market]) -> list[tuple[int, str]]:
    return sorted(m.sort_key() for m in markets)


async def get_markets(request: web.Request) -> web.Response:
    rt: Runtime = request.app["runtime"]
    ex = rt.exchange
    q = request.query
    limit = _limit(q, "GetMarkets", 100, MARKETS_MAX_LIMIT)
    keep, tickers, events, none_match = market_filter(q)
    if none_match:
        return json_response({"markets": [], "cursor": ""})
    if tickers or events:
        chosen: dict[str, Market] = {}
        for t in tickers:
            if t in ex.markets:
                chosen[t] = ex.markets[t]
        if events:
            wanted = {m.ticker for e in events if e in ex.events for m in ex.events[e].markets}
            if tickers:
                chosen = {t: m for t, m in chosen.items() if t in wanted}
            else:
                chosen = {t: ex.markets[t] for t in wanted}
        keys = _keys_of(chosen.values())
    else:
        keys = ex.market_order
    page, cursor = page_desc(
        keys, decode_cursor(q.get("cursor")), limit, ex.markets.__getitem__, keep
    )
    return json_response({"markets": [m.to_json() for m in page], "cursor": cursor})


async def get_market(request: web.Request) -> web.Response:
    rt: Runtime = request.app["runtime"]
    m = rt.exchange.markets.get(request.match_info["ticker"])
    if m is None:
        return json_response(NOT_FOUND, 404)
    return json_response({"market": m.to_json()})


def _depth(query: Any, endpoint: str) -> int:
    depth = _int_param(query, "depth", endpoint)
    if depth is not None and not 0 <= depth <= 100:
        raise _validation(endpoint, "Depth", "lte" if depth > 100 else "gte")
    return depth or 0


async def get_orderbook(request: web.Request) -> web.Response:
    """The market's whole book (or its `depth` best levels a side), as the WebSocket shows it."""
    rt: Runtime = request.app["runtime"]
    depth = _depth(request.query, "GetMarketOrderbook")
    m = rt.exchange.markets.get(request.match_info["ticker"])
    if m is None:
        return json_response(NOT_FOUND, 404)
    return json_response({"orderbook_fp": rest_book(m.quote.book, depth)})


ORDERBOOKS_MAX_TICKERS = 100


async def get_orderbooks(request: web.Request) -> web.Response:
    """`GET /markets/orderbooks?tickers=A&tickers=B`: 1 to 100 books at once; tickers the
    exchange does not list are left out."""
    rt: Runtime = request.app["runtime"]
    tickers = list(dict.fromkeys(_list_param(request.query, "tickers")))
    if not tickers:
        raise _validation("GetMarketOrderbooks", "Tickers", "min")
    if len(tickers) > ORDERBOOKS_MAX_TICKERS:
        raise _validation("GetMarketOrderbooks", "Tickers", "max")
    depth = _depth(request.query, "GetMarketOrderbooks")
    markets = rt.exchange.markets
    books = [
        {"orderbook_fp": rest_book(markets[t].quote.book, depth), "ticker": t}
        for t in tickers
        if t in markets
    ]
    return json_response({"orderbooks": books})


async def get_trades(request: web.Request) -> web.Response:
    rt: Runtime = request.app["runtime"]
    q = request.query
    endpoint = "GetTrades"
    limit = _limit(q, endpoint, 100, MARKETS_MAX_LIMIT)
    ticker = q.get("ticker") or None
    min_ts = _int_param(q, "min_ts", endpoint)
    max_ts = _int_param(q, "max_ts", endpoint)
    before: int | None = None
    cursor = q.get("cursor")
    if cursor:
        try:
            before = int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
        except (binascii.Error, ValueError, UnicodeDecodeError):
            before = None
    out: list[dict[str, Any]] = []
    more = False
    last_seq = 0
    for t in reversed(rt.tape.trades):
        if before is not None and t.seq >= before:
            continue
        if ticker is not None and t.ticker != ticker:
            continue
        secs = t.ts_us // 1_000_000
        if (min_ts is not None and secs < min_ts) or (max_ts is not None and secs > max_ts):
            continue
        if len(out) == limit:
            more = True
            break
        out.append(t.rest_json())
        last_seq = t.seq
    next_cursor = ""
    if more and out:
        next_cursor = base64.urlsafe_b64encode(str(last_seq).encode()).decode().rstrip("=")
    return json_response({"trades": out, "cursor": next_cursor})


async def get_events(request: web.Request) -> web.Response:
    rt: Runtime = request.app["runtime"]
    ex = rt.exchange
    q = request.query
    endpoint = "GetEvents"
    limit = _limit(q, endpoint, EVENTS_MAX_LIMIT, EVENTS_MAX_LIMIT)
    status = q.get("status") or None
    if status is not None and status not in ("unopened", "open", "closed", "settled"):
        raise _validation(endpoint, "Status", "oneof")
    statuses = FILTER_STATUSES[status] if status else None
    series = q.get("series_ticker") or None
    nested = q.get("with_nested_markets", "").lower() == "true"

    def keep(e: Event) -> bool:
        if series is not None and e.series_ticker != series:
            return False
        return statuses is None or any(m.status in statuses for m in e.markets)

    page, cursor = page_desc(
        ex.event_order, decode_cursor(q.get("cursor")), limit, ex.events.__getitem__, keep
    )
    return json_response({"events": [e.to_json(nested) for e in page], "cursor": cursor})


async def get_event(request: web.Request) -> web.Response:
    rt: Runtime = request.app["runtime"]
    e = rt.exchange.events.get(request.match_info["event_ticker"])
    if e is None:
        return json_response(NOT_FOUND, 404)
    nested = request.query.get("with_nested_markets", "").lower() == "true"
    return json_response({"event": e.to_json(nested), "markets": [m.to_json() for m in e.markets]})


async def get_series_list(request: web.Request) -> web.Response:
    rt: Runtime = request.app["runtime"]
    category = request.query.get("category") or None
    tags = set(_list_param(request.query, "tags"))
    out = [
        s.to_json()
        for _, s in sorted(rt.exchange.series.items())
        if (category is None or s.category == category) and (not tags or tags & set(s.tags))
    ]
    return json_response({"series": out})


async def get_series(request: web.Request) -> web.Response:
    rt: Runtime = request.app["runtime"]
    s = rt.exchange.series.get(request.match_info["series_ticker"])
    if s is None:
        return json_response(NOT_FOUND, 404)
    return json_response({"series": s.to_json()})


async def exchange_status(request: web.Request) -> web.Response:
    """The whole exchange and one entry per matching-engine shard (`exchange_index`); a shard in
    the `paused_shards` fault reports `trading_active: false`, the exchange as a whole only
    when every shard is paused."""
    rt: Runtime = request.app["runtime"]
    paused = rt.faults.paused_shards
    shards = [
        {
            "description": description,
            "exchange_active": True,
            "exchange_index": index,
            "intra_exchange_transfers_active": True,
            "trading_active": index not in paused,
        }
        for index, description in sorted(SHARDS.items())
    ]
    return json_response(
        {
            "exchange_active": True,
            "exchange_index_statuses": shards,
            "intra_exchange_transfers_active": True,
            "trading_active": any(s["trading_active"] for s in shards),
        }
    )


async def exchange_schedule(request: web.Request) -> web.Response:
    """Open around the clock but for the weekly Thursday 03:00-05:00 ET maintenance."""
    all_day = [{"open_time": "00:00", "close_time": "23:59"}]
    week: dict[str, Any] = dict.fromkeys(
        ("monday", "tuesday", "wednesday", "friday", "saturday", "sunday"), all_day
    )
    week["thursday"] = [
        {"open_time": "00:00", "close_time": "03:00"},
        {"open_time": "05:00", "close_time": "23:59"},
    ]
    standard = {"start_time": "2026-01-01T00:00:00Z", "end_time": "2100-01-01T00:00:00Z", **week}
    return json_response({"schedule": {"maintenance_windows": [], "standard_hours": [standard]}})


SIM_BALANCE_C = 100_000
"""Every simulated account holds $1,000.00 in cash and no positions."""
BASIC_READ_TOKENS_PER_S = 200
BASIC_WRITE_TOKENS_PER_S = 100


async def portfolio_balance(request: web.Request) -> web.Response:
    """Kalshi's shape: integer cents in `balance` and `portfolio_value`, the dollar string beside
    them, one breakdown entry per shard holding cash, `updated_ts` in seconds."""
    rt: Runtime = request.app["runtime"]
    dollars = f"{SIM_BALANCE_C // 100}.{SIM_BALANCE_C % 100:02d}00"
    return json_response(
        {
            "balance": SIM_BALANCE_C,
            "balance_breakdown": [{"balance": dollars, "exchange_index": 0}],
            "balance_dollars": dollars,
            "portfolio_value": 0,
            "updated_ts": rt.started_s,
        }
    )


async def account_limits(request: web.Request) -> web.Response:
    """The caller's token buckets as `GET /account/limits` reports them: the read bucket is the
    one this simulator enforces; the write bucket is Basic's (the simulator takes no orders)."""
    rt: Runtime = request.app["runtime"]
    rate = rt.config.rest_tokens_per_s
    return json_response(
        {
            "grants": [],
            "read": {"bucket_capacity": int(READ_BUCKET_SECONDS * rate), "refill_rate": int(rate)},
            "usage_tier": "basic" if rate == BASIC_READ_TOKENS_PER_S else "custom",
            "write": {
                "bucket_capacity": BASIC_WRITE_TOKENS_PER_S,
                "refill_rate": BASIC_WRITE_TOKENS_PER_S,
            },
        }
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{API}/markets", get_markets, name="get_markets")
    r.add_get(f"{API}/markets/trades", get_trades, name="get_trades")
    r.add_get(f"{API}/markets/orderbooks", get_orderbooks, name="get_orderbooks")
    r.add_get(f"{API}/markets/{{ticker}}", get_market, name="get_market")
    r.add_get(f"{API}/markets/{{ticker}}/orderbook", get_orderbook, name="get_orderbook")
    r.add_get(f"{API}/events", get_events, name="get_events")
    r.add_get(f"{API}/events/{{event_ticker}}", get_event, name="get_event")
    r.add_get(f"{API}/series", get_series_list, name="get_series_list")
    r.add_get(f"{API}/series/{{series_ticker}}", get_series, name="get_series")
    r.add_get(f"{API}/exchange/status", exchange_status, name="exchange_status")
    r.add_get(f"{API}/exchange/schedule", exchange_schedule, name="exchange_schedule")
    r.add_get(f"{API}/portfolio/balance", portfolio_balance, name="portfolio_balance")
    r.add_get(f"{API}/account/limits", account_limits, name="account_limits")


def _is_api(path: str) -> bool:
    return path == API or path.startswith(API + "/")


@web.middleware
async def gateway(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Faults, routing errors, signatures and the token bucket, in that order."""
    if not _is_api(request.path):
        return await handler(request)
    rt: Runtime = request.app["runtime"]
    c = rt.counters
    c.rest_requests += 1
    faults = rt.faults
    if faults.slow_ms:
        await asyncio.sleep(faults.slow_ms / 1000)
    if faults.http_429():
        c.rest_429 += 1
        return json_response(TOO_MANY_REQUESTS, 429)
    status = faults.http_5xx_status()
    if status is not None:
        c.rest_5xx += 1
        return json_response(FAULT_BODIES[status], status)
    route_error = request.match_info.http_exception
    if route_error is not None:
        c.rest_404 += 1
        if isinstance(route_error, web.HTTPMethodNotAllowed):
            return json_response(METHOD_NOT_ALLOWED, 405)
        return json_response(NOT_FOUND, 404)
    public = request.match_info.route.name in PUBLIC_ROUTES
    if public and not has_auth_headers(request.headers):
        identity = f"ip:{request.remote}"
    else:
        result = rt.keys.verify(request.headers, request.method, request.url.raw_path)
        if isinstance(result, AuthFailure):
            c.rest_401 += 1
            return json_response(result.body, 401)
        identity = f"key:{result}"
    if not rt.rest_allowed(identity):
        c.rest_429 += 1
        return json_response(TOO_MANY_REQUESTS, 429)
    try:
        return await handler(request)
    except ParamError as err:
        return json_response(err.body, 400)

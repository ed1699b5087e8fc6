"""The test-only control surface under `/_sim/`, answered to loopback peers only.

`POST /_sim/faults` sets the fault state (see faults.py) and carries out one-shot actions;
`GET /_sim/faults`, `/_sim/stats` and `/_sim/sessions` report.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from kalshi_pipeline.simulator.faults import FaultError, FaultRequest, parse_faults
from kalshi_pipeline.simulator.hub import ORDERBOOK, TICKER, TRADE
from kalshi_pipeline.simulator.runtime import Runtime
from kalshi_pipeline.simulator.wire import dumps

FORBIDDEN = b'{"error":{"code":"forbidden","message":"the control endpoint answers loopback only"}}'
BUFFERED_CHANNELS = (TICKER, TRADE, ORDERBOOK)
"""The subscriptions the `buffer_overflow` fault ends with error 25 (the market-data streams)."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback_peer(remote: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; unix sockets (no address) are not."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _json(body: Any, status: int = 200) -> web.Response:
    data = body if isinstance(body, bytes) else dumps(body)
    return web.Response(status=status, body=data, content_type="application/json")


@web.middleware
async def loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/_sim") and not is_loopback_peer(request.remote):
        return _json(FORBIDDEN, 403)
    return await handler(request)


def apply_faults(rt: Runtime, req: FaultRequest) -> dict[str, int]:
    """Set the state and carry out the one-shot actions; returns what the actions touched."""
    rt.faults.apply(req)
    applied: dict[str, int] = {}
    sessions = list(rt.sessions.values())
    if req.channel_error:
        applied["channel_error"] = sum(s.terminate(10) for s in sessions)
    if req.buffer_overflow:
        applied["buffer_overflow"] = sum(
            s.terminate(25, channels=BUFFERED_CHANNELS) for s in sessions
        )
    if req.subscription_error is not None:
        channel, code = req.subscription_error
        applied["subscription_error"] = sum(s.subscription_error(channel, code) for s in sessions)
    if req.drop_connections:
        applied["drop_connections"] = drop_all(rt)
    return applied


def drop_all(rt: Runtime) -> int:
    sessions = list(rt.sessions.values())
    for s in sessions:
        s.drop()
    rt.counters.connections_dropped += len(sessions)
    return len(sessions)


async def post_faults(request: web.Request) -> web.Response:
    rt: Runtime = request.app["runtime"]
    try:
        body = await request.json() if await request.read() else {}
        req = parse_faults(body)
    except json.JSONDecodeError as exc:
        return _json({"error": f"body is not JSON: {exc}"}, 400)
    except FaultError as exc:
        return _json({"error": str(exc)}, 400)
    applied = apply_faults(rt, req)
    return _json({**rt.faults.state(), "applied": applied})


async def get_faults(request: web.Request) -> web.Response:
    rt: Runtime = request.app["runtime"]
    return _json(rt.faults.state())


async def get_stats(request: web.Request) -> web.Response:
    rt: Runtime = request.app["runtime"]
    c = rt.counters
    hub = rt.hub
    body = {
        "now_ms": time.time_ns() // 1_000_000,
        "ledger_lines": rt.ledger.count,
        "firehose_frames": len(rt.firehose),
        "book_firehose_frames": len(rt.book_firehose),
        "book_firehose_frames_sent": c.book_firehose_frames_sent,
        "trades": hub.trades_published,
        "book_deltas": hub.book_deltas_published,
        "book_frames_queued": hub.book_frames_queued,
        "book_ledger_lines": hub.book_ledger.count,
        "frames_dropped": hub.frames_dropped,
        "frames_reordered": hub.frames_reordered,
        "lifecycle_messages": hub.lifecycle_published,
        "ticker_frames_queued": hub.ticker_frames_queued,
        "ticker_frames_sent": c.ticker_frames_sent,
        "snapshot_frames_sent": c.snapshot_frames_sent,
        "data_frames_sent": c.data_frames_sent,
        "control_frames_sent": c.control_frames_sent,
        "malformed_sent": c.malformed_sent,
        "pings_sent": c.pings_sent,
        "connections_open": len(rt.sessions),
        "connections_total": len(rt.session_stats),
        "connections_dropped": c.connections_dropped,
        "handshakes_accepted": c.handshakes_accepted,
        "handshakes_unauthorized": c.handshakes_unauthorized,
        "handshakes_refused": c.handshakes_refused,
        "rest_requests": c.rest_requests,
        "rest_401": c.rest_401,
        "rest_404": c.rest_404,
        "rest_429": c.rest_429,
        "rest_5xx": c.rest_5xx,
        "markets_by_status": rt.exchange.count_by_status(),
        "markets_total": len(rt.exchange.markets),
        "events_total": len(rt.exchange.events),
        "faults": rt.faults.state(),
    }
    return _json(body)


async def get_sessions(request: web.Request) -> web.Response:
    rt: Runtime = request.app["runtime"]
    return _json([s.to_json() for s in rt.session_stats])


def add_routes(app: web.Application) -> None:
    app.router.add_post("/_sim/faults", post_faults)
    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_get("/_sim/sessions", get_sessions)

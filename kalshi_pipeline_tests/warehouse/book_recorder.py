"""A small order-book recorder for the book query tests: lands what the stream's feed would land.

It connects to the simulator, records a `connect` feed event, subscribes `orderbook_delta`,
`trade` and `ticker` for some markets (NO levels at NO-leg prices, as the stream asks), and lands
every frame in a landing log. It checks `seq` per order-book sid as the feed does: on a gap it
records `sequence_gap` (the feed's wording, every market of the sid named) and, after
`resync_delay_s`, asks for fresh snapshots (`get_snapshot`), recording `book_resynced` when
they are in. Run as a module it is a second engine, in a process of its own:

    python -m kalshi_pipeline_tests.warehouse.book_recorder REST_URL WS_URL FOLDER T1,T2 SECONDS
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.kalshi.websocket import KalshiWebSocket
from kalshi_pipeline.stream.landing import Kind, LandingLog, Source

CHANNELS = ["orderbook_delta", "trade", "ticker"]


def _event(landing: LandingLog, kind: str, detail: str) -> None:
    payload = json.dumps({"kind": kind, "detail": detail}).encode()
    landing.append(Kind.FEED_EVENT, Source.WEBSOCKET, payload)


async def record(
    rest_url: str,
    ws_url: str,
    landing: LandingLog,
    tickers: list[str],
    seconds: float,
    *,
    connections: int = 1,
    resync_delay_s: float = 0.3,
) -> list[tuple[int, int]]:
    """Record for `seconds` over `connections` consecutive connections (a reconnect between
    each); returns each connection's (first, last) receive time in ns."""
    settings = KalshiSettings.for_env("local", rest_url=rest_url, ws_url=ws_url)
    spans: list[tuple[int, int]] = []
    per = seconds / connections
    for _ in range(connections):
        ws = KalshiWebSocket(settings.ws_url, settings.signer(), command_timeout_s=10)
        await ws.connect()
        _event(landing, "connect", ws_url)
        first = time.time_ns()
        tasks: set[asyncio.Task[None]] = set()
        try:
            await ws.subscribe(CHANNELS, market_tickers=tickers, use_yes_price=False)
            book_sid = next(s for s, c in ws.subscriptions.items() if c == "orderbook_delta")
            expected: int | None = None
            awaiting: set[str] = set()
            end = time.monotonic() + per
            while time.monotonic() < end:
                try:
                    frame = await asyncio.wait_for(ws.recv(), timeout=0.5)
                except TimeoutError:
                    continue
                landing.append(Kind.WS_FRAME, Source.WEBSOCKET, frame.data, frame.received_ns)
                head = json.loads(frame.data)
                if head.get("sid") != book_sid or "seq" not in head:
                    continue
                seq = int(head["seq"])
                if expected is not None and seq != expected:
                    _event(
                        landing,
                        "sequence_gap",
                        f"orderbook_delta sid {book_sid}: seq {expected} expected, {seq} "
                        f"received; markets: {','.join(tickers)}",
                    )
                    awaiting = set(tickers)
                    tasks.add(asyncio.create_task(_resync(ws, book_sid, tickers, resync_delay_s)))
                expected = seq + 1
                if awaiting and head.get("type") == "orderbook_snapshot":
                    awaiting.discard(head["msg"]["market_ticker"])
                    if not awaiting:
                        _event(
                            landing,
                            "book_resynced",
                            f"orderbook_delta sid {book_sid}: fresh snapshots for "
                            f"{len(tickers)} markets: {','.join(tickers)}",
                        )
        finally:
            for task in tasks:
                task.cancel()
            await ws.close()
            _event(landing, "disconnect", "closed by the recorder")
        spans.append((first, time.time_ns()))
        landing.flush()
    return spans


async def _resync(ws: KalshiWebSocket, sid: int, tickers: list[str], delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    # get_snapshot answers with snapshots only (no `ok` to wait for)
    with contextlib.suppress(Exception):
        await ws.update_subscription(sid, "get_snapshot", market_tickers=tickers)


def main(argv: list[str]) -> int:
    rest_url, ws_url, folder, tickers, seconds = argv
    landing = LandingLog(Path(folder))
    try:
        asyncio.run(record(rest_url, ws_url, landing, tickers.split(","), float(seconds)))
    finally:
        landing.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

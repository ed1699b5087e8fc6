"""Order book and trade frames from the simulator, landed and loaded by the writer: the stored
snapshot and deltas rebuild exactly the book the simulator serves over REST, and every trade is
stored once with the simulator's own values."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.kalshi.websocket import KalshiWebSocket
from kalshi_pipeline.stream.landing import Kind, LandingLog, Source
from kalshi_pipeline.stream.writer import Writer
from kalshi_pipeline.warehouse.owner import Owner
from kalshi_pipeline_tests.helpers import query, wait_for

pytestmark = pytest.mark.timeout(120)

D = Decimal


def _rest_book(sim: Any, ticker: str) -> dict[tuple[str, Decimal], Decimal]:
    body = requests.get(f"{sim.rest_url}/markets/{ticker}/orderbook", timeout=10).json()
    book = body["orderbook_fp"]
    out = {}
    for side in ("yes", "no"):
        for price, count in book.get(f"{side}_dollars") or []:
            out[(side, D(price))] = D(count)
    return out


def test_stored_snapshots_and_deltas_rebuild_the_exchanges_book_and_trades_are_stored_once(
    sim_factory: Any, tmp_path: Path
) -> None:
    sim = sim_factory(markets=40, rate=200, with_ledger=False)
    settings = KalshiSettings.for_env("local", rest_url=sim.rest_url, ws_url=sim.ws_url)
    markets = requests.get(f"{sim.rest_url}/markets", params={"status": "open"}, timeout=10)
    tickers = [m["ticker"] for m in markets.json()["markets"]][:15]
    folder = tmp_path / "k.landing"
    landing = LandingLog(folder)
    counts: dict[str, int] = defaultdict(int)

    async def record() -> None:
        ws = KalshiWebSocket(settings.ws_url, settings.signer(), command_timeout_s=10)
        await ws.connect()
        try:
            await ws.subscribe(
                ["orderbook_delta", "trade"], market_tickers=tickers, use_yes_price=False
            )
            paused_at: float | None = None
            while True:
                try:
                    frame = await asyncio.wait_for(ws.recv(), timeout=1.0)
                except TimeoutError:
                    if paused_at is not None:
                        return  # the exchange is paused and nothing more came
                    continue
                landing.append(Kind.WS_FRAME, Source.WEBSOCKET, frame.data, frame.received_ns)
                kind = frame.data[9:30].split(b'"')[0].decode()
                counts[kind] += 1
                if paused_at is None and counts["orderbook_delta"] >= 300 and counts["trade"] >= 5:
                    sim.set_faults(pause_updates=True)
                    paused_at = time.monotonic()
        finally:
            await ws.close()

    asyncio.run(asyncio.wait_for(record(), timeout=90))
    landing.close()
    db = tmp_path / "k.duckdb"
    writer = Writer(Owner(db), folder)
    try:
        wait_for(lambda: writer.load_once() == 0, timeout=60, what="the landing log loaded")
    finally:
        writer.close()

    for ticker in tickers:
        stored = {
            (side, price): size
            for side, price, size in query(
                db, "SELECT side, price, size FROM book_at(?, now())", [ticker]
            )
        }
        assert stored == _rest_book(sim, ticker), ticker

    deltas = query(db, "SELECT count(*), count(DISTINCT (sid, seq)) FROM book_deltas")[0]
    assert deltas[0] == deltas[1] == counts["orderbook_delta"]
    trades = query(db, "SELECT trade_id, market_ticker, yes_price, count FROM trades")
    assert len(trades) == counts["trade"] == len({t[0] for t in trades})
    tape = requests.get(f"{sim.rest_url}/markets/trades", params={"limit": 1000}, timeout=10)
    served = {
        t["trade_id"]: (t["ticker"], D(t["yes_price_dollars"]), D(t["count_fp"]))
        for t in tape.json()["trades"]
    }
    assert all(served[tid] == (m, p, n) for tid, m, p, n in trades)

"""Order-book firehose mode: N `orderbook_delta` frames sent to an order-book subscription once it
covers every firehose market, held to the protocol (kalshi-protocol.md §3.8): each market's
snapshot first, one contiguous seq counter per sid shared with snapshots and acks, and books
that end where REST and the book ledger say they are."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import requests

from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.helpers import wait_for
from kalshi_pipeline_tests.simulator.support import TestSigner, recv, ws_connect

N = 3001  # odd: one market's first change arrives in two parts

Book = dict[str, dict[Decimal, Decimal]]


def _book_tickers(sim: SimulatorProcess) -> list[str]:
    body = requests.get(
        f"{sim.rest_url}/markets", params={"series_ticker": "KXSIMBOOK", "limit": 1000}, timeout=10
    ).json()
    return sorted(m["ticker"] for m in body["markets"])


def _snapshot_book(msg: dict[str, Any]) -> Book:
    return {
        side: {Decimal(p): Decimal(s) for p, s in msg.get(f"{side}_dollars_fp", [])}
        for side in ("yes", "no")
    }


def _apply(book: Book, msg: dict[str, Any]) -> None:
    levels = book[msg["side"]]
    price = Decimal(msg["price_dollars"])
    size = levels.get(price, Decimal(0)) + Decimal(msg["delta_fp"])
    assert size >= 0, f"{msg['market_ticker']} {msg['side']} {price} went negative"
    if size:
        levels[price] = size
    else:
        del levels[price]


def _crossed(book: Book) -> bool:
    if not book["yes"] or not book["no"]:
        return False
    return max(book["yes"]) + max(book["no"]) >= 1


def _rest_book(sim: SimulatorProcess, ticker: str) -> Book:
    body = requests.get(f"{sim.rest_url}/markets/{ticker}/orderbook", timeout=10).json()
    fp = body["orderbook_fp"]
    return {
        side: {Decimal(p): Decimal(s) for p, s in fp[f"{side}_dollars"]} for side in ("yes", "no")
    }


def test_book_firehose_follows_snapshots_on_one_seq_counter_and_ends_at_rest(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(markets=60, rate=0, book_firehose=N)
    tickers = _book_tickers(sim)
    assert len(tickers) == 30  # half the markets; the firehose moves only these
    other = next(
        m["ticker"]
        for m in requests.get(
            f"{sim.rest_url}/markets", params={"status": "open", "limit": 100}, timeout=10
        ).json()["markets"]
        if not m["ticker"].startswith("KXSIMBOOK")
    )
    frames: list[dict[str, Any]] = []
    book_sid: list[int] = []

    async def run() -> None:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            # a ticker subscription first, so the order-book sid is not 1
            await ws.send(
                json.dumps({"id": 1, "cmd": "subscribe", "params": {"channels": ["ticker"]}})
            )
            half = len(tickers) // 2
            await ws.send(
                json.dumps(
                    {
                        "id": 2,
                        "cmd": "subscribe",
                        "params": {
                            "channels": ["orderbook_delta"],
                            "market_tickers": tickers[:half],
                        },
                    }
                )
            )
            # no firehose while the subscription covers only some of its markets
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                try:
                    frame = await recv(ws, max(0.05, deadline - time.monotonic()))
                except TimeoutError:
                    continue
                if frame.get("type") != "ticker":
                    frames.append(frame)
            assert not [f for f in frames if f["type"] == "orderbook_delta"]
            sid = next(
                f["msg"]["sid"]
                for f in frames
                if f["type"] == "subscribed" and f["msg"]["channel"] == "orderbook_delta"
            )
            assert sid != 1
            book_sid.append(sid)
            await ws.send(
                json.dumps(
                    {
                        "id": 3,
                        "cmd": "update_subscription",
                        "params": {
                            "sid": sid,
                            "action": "add_markets",
                            "market_tickers": tickers[half:],
                        },
                    }
                )
            )
            # queued behind the firehose: its ok numbers after the last delta
            await ws.send(
                json.dumps(
                    {
                        "id": 4,
                        "cmd": "update_subscription",
                        "params": {"sid": sid, "action": "add_markets", "market_tickers": [other]},
                    }
                )
            )
            while True:
                frame = await recv(ws, 20)
                if frame.get("type") == "ticker":
                    continue
                frames.append(frame)
                if frame.get("type") == "ok" and frame.get("id") == 4:
                    break
        finally:
            await ws.close()

    subscribed_ms = time.time_ns() // 1_000_000
    asyncio.run(run())
    book_frames = [f for f in frames if f.get("sid") == book_sid[0]]
    deltas = [f for f in book_frames if f["type"] == "orderbook_delta"]
    assert len(deltas) == N
    # one counter per sid: snapshots, acks and the firehose's deltas, contiguous from 1
    seqs = [f["seq"] for f in book_frames if "seq" in f]
    assert seqs == list(range(1, len(seqs) + 1))
    assert book_frames[-1]["type"] == "ok" and book_frames[-1]["id"] == 4
    assert book_frames[-2]["type"] == "orderbook_delta"
    # each market's snapshot comes before any of its deltas
    books: dict[str, Book] = {}
    for f in book_frames:
        if f["type"] == "orderbook_snapshot":
            books[f["msg"]["market_ticker"]] = _snapshot_book(f["msg"])
        elif f["type"] == "orderbook_delta":
            ticker = f["msg"]["market_ticker"]
            assert ticker in books, f"a delta of {ticker} before its snapshot"
            assert f["sending_ts_ms"] >= subscribed_ms  # stamped when sent
            _apply(books[ticker], f["msg"])
            assert not _crossed(books[ticker])
    assert {f["msg"]["market_ticker"] for f in deltas} == set(tickers)
    # after the firehose the client's books are REST's
    for ticker in tickers:
        assert books[ticker] == _rest_book(sim, ticker), ticker
    # every frame is a book-ledger line, in the order sent; the ledger alone rebuilds REST's books
    wanted = set(tickers)

    def firehose_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            x["msg"]
            for x in lines
            if x["type"] == "orderbook_delta" and x["msg"]["market_ticker"] in wanted
        ]

    ledger = wait_for(
        lambda: (lines := sim.read_book_ledger()) and len(firehose_lines(lines)) >= N and lines,
        timeout=10,
    )
    ledger_deltas = firehose_lines(ledger)
    assert ledger_deltas == [f["msg"] for f in deltas]
    rebuilt: dict[str, Book] = {}
    for x in ledger:
        t = x["msg"].get("market_ticker")
        if t not in wanted or "sid" in x:  # snapshots sent to a subscription are not changes
            continue
        if x["type"] == "orderbook_snapshot":
            rebuilt[t] = _snapshot_book(x["msg"])
        elif x["type"] == "orderbook_delta":
            _apply(rebuilt[t], x["msg"])
    for ticker in tickers:
        assert rebuilt[ticker] == _rest_book(sim, ticker), ticker
    session = wait_for(lambda: sim.sessions(), timeout=5)[0]
    assert session["book_firehose_frames_sent"] == N
    assert sim.stats()["book_firehose_frames"] == N


def test_book_firehose_of_one_delta_is_refused_with_the_fix(tmp_path: Any) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "kalshi_pipeline.simulator", "--port", "0"),
            *("--markets", "20", "--book-firehose", "1", "--kalshi-home", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--book-firehose 1" in proc.stderr
    assert "2 or more" in proc.stderr


def test_book_firehose_honours_use_yes_price(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    n = 400
    sim = start_sim(markets=20, rate=0, book_firehose=n)
    tickers = _book_tickers(sim)
    deltas: list[dict[str, Any]] = []

    async def run() -> None:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            params = {
                "channels": ["orderbook_delta"],
                "market_tickers": tickers,
                "use_yes_price": True,
            }
            await ws.send(json.dumps({"id": 1, "cmd": "subscribe", "params": params}))
            while len(deltas) < n:
                frame = await recv(ws, 20)
                if frame["type"] == "orderbook_delta":
                    deltas.append(frame["msg"])
        finally:
            await ws.close()

    asyncio.run(run())
    wanted = set(tickers)
    plain = wait_for(
        lambda: (
            (
                lines := [
                    x["msg"]
                    for x in sim.read_book_ledger()
                    if x["type"] == "orderbook_delta" and x["msg"]["market_ticker"] in wanted
                ]
            )
            and len(lines) >= n
            and lines
        ),
        timeout=10,
    )
    assert len(deltas) == len(plain) == n
    for got, ledger in zip(deltas, plain, strict=True):
        price = Decimal(ledger["price_dollars"])
        shown = 1 - price if ledger["side"] == "no" else price
        assert Decimal(got["price_dollars"]) == shown
        assert {k: v for k, v in got.items() if k != "price_dollars"} == {
            k: v for k, v in ledger.items() if k != "price_dollars"
        }
    assert any(d["side"] == "no" for d in deltas)

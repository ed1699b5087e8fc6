"""The order book behind every channel: `orderbook_delta` snapshots and deltas over a real socket
rebuild the book REST shows and the ticker's L1; `seq` runs per sid across markets; the drop and
reorder faults show as gaps the book ledger names; trades add up to volume."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import requests
from websockets.asyncio.client import ClientConnection

from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.helpers import wait_for
from kalshi_pipeline_tests.simulator.support import (
    TestSigner,
    error_code,
    recv,
    recv_until,
    ws_connect,
)

Book = dict[str, dict[Decimal, Decimal]]
BOOK_TYPES = ("orderbook_snapshot", "orderbook_delta")
L1_KEYS = ("yes_bid_dollars", "yes_ask_dollars", "yes_bid_size_fp", "yes_ask_size_fp")


def open_tickers(sim: SimulatorProcess, n: int) -> list[str]:
    markets = requests.get(
        f"{sim.rest_url}/markets", params={"status": "open", "limit": n}, timeout=10
    ).json()["markets"]
    tickers = [m["ticker"] for m in markets]
    assert len(tickers) == n
    return tickers


def apply(books: dict[str, Book], msg: dict[str, Any], kind: str, yes_scale: bool) -> None:
    """A client's book keeping: snapshots replace, deltas add; prices back on each side's leg."""
    t = msg["market_ticker"]

    def leg(side: str, price: str) -> Decimal:
        p = Decimal(price)
        return Decimal(1) - p if side == "no" and yes_scale else p

    if kind == "orderbook_snapshot":
        books[t] = {
            side: {leg(side, p): Decimal(s) for p, s in msg.get(f"{side}_dollars_fp", [])}
            for side in ("yes", "no")
        }
        return
    levels = books[t][msg["side"]]
    price = leg(msg["side"], msg["price_dollars"])
    size = levels.get(price, Decimal(0)) + Decimal(msg["delta_fp"])
    assert size >= 0, (t, msg)
    if size:
        levels[price] = size
    else:
        del levels[price]


def rest_books(sim: SimulatorProcess, tickers: list[str], depth: int = 0) -> dict[str, Book]:
    params: list[tuple[str, Any]] = [("tickers", t) for t in tickers]
    if depth:
        params.append(("depth", depth))
    body = requests.get(f"{sim.rest_url}/markets/orderbooks", params=params, timeout=10).json()
    out: dict[str, Book] = {}
    for b in body["orderbooks"]:
        fp = b["orderbook_fp"]
        for key in ("yes_dollars", "no_dollars"):
            prices = [Decimal(p) for p, _ in fp[key]]
            assert prices == sorted(prices), "ascending, best last"
        out[b["ticker"]] = {
            side: {Decimal(p): Decimal(s) for p, s in fp[f"{side}_dollars"]}
            for side in ("yes", "no")
        }
    return out


async def drain(ws: ClientConnection, cid: int) -> list[dict[str, Any]]:
    """Every frame up to the answer of a `list_subscriptions` sent now: the connection's queue
    is one FIFO, so that answer comes after every frame queued before the command arrived."""
    await ws.send(json.dumps({"id": cid, "cmd": "list_subscriptions"}))
    _, before = await recv_until(ws, lambda f: f.get("id") == cid, 20, "list_subscriptions")
    return before


def run_ws(
    sim: SimulatorProcess, signer: TestSigner, body: Callable[[ClientConnection], Any]
) -> Any:
    async def main() -> Any:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            return await body(ws)
        finally:
            await ws.close()

    return asyncio.run(main())


def test_snapshot_and_deltas_rebuild_the_rest_book_and_the_ticker_l1(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(markets=120, rate=400)
    tickers = open_tickers(sim, 15)
    plain: dict[str, Book] = {}
    yes_scaled: dict[str, Book] = {}
    last_ticker: dict[str, dict[str, Any]] = {}

    async def body(ws: ClientConnection) -> None:
        other = await ws_connect(sim.ws_url, signer)
        try:
            await ws.send(
                json.dumps(
                    {
                        "id": 1,
                        "cmd": "subscribe",
                        "params": {
                            "channels": ["orderbook_delta", "ticker"],
                            "market_tickers": tickers,
                            "use_yes_price": False,
                        },
                    }
                )
            )
            await other.send(
                json.dumps(
                    {
                        "id": 1,
                        "cmd": "subscribe",
                        "params": {
                            "channels": ["orderbook_delta"],
                            "market_tickers": tickers,
                            "use_yes_price": True,
                        },
                    }
                )
            )
            frames: list[dict[str, Any]] = []
            while sum(f["type"] == "orderbook_delta" for f in frames) < 400:
                frames.append(await recv(ws, 10))
            await asyncio.to_thread(sim.set_faults, pause_updates=True)
            frames += await drain(ws, 2)
            other_frames = await drain(other, 2)
        finally:
            await other.close()
        subscribed = [f for f in frames if f["type"] == "subscribed"]
        assert [f["msg"]["channel"] for f in subscribed] == ["orderbook_delta", "ticker"]
        book_sid = subscribed[0]["msg"]["sid"]
        book_frames = [f for f in frames if f["type"] in BOOK_TYPES]
        assert {f["sid"] for f in book_frames} == {book_sid}
        # one counter for the sid across all its markets, from 1, no gaps
        assert [f["seq"] for f in book_frames] == list(range(1, len(book_frames) + 1))
        assert [f["msg"]["market_ticker"] for f in book_frames[: len(tickers)]] == tickers
        assert all(f["type"] == "orderbook_snapshot" for f in book_frames[: len(tickers)])
        assert len({f["msg"]["market_ticker"] for f in book_frames[len(tickers) :]}) > 5
        for f in book_frames:
            assert (
                "ts" not in f["msg"] if f["type"] == "orderbook_snapshot" else "ts_ms" in f["msg"]
            )
            apply(plain, f["msg"], f["type"], yes_scale=False)
        for f in frames:
            if f["type"] == "ticker":
                last_ticker[f["msg"]["market_ticker"]] = f["msg"]
        other_book = [f for f in other_frames if f["type"] in BOOK_TYPES]
        assert [f["seq"] for f in other_book] == list(range(1, len(other_book) + 1))
        for f in other_book:
            apply(yes_scaled, f["msg"], f["type"], yes_scale=True)

    run_ws(sim, signer, body)
    rest = rest_books(sim, tickers)
    assert plain == rest
    assert yes_scaled == rest
    markets = {
        t: requests.get(f"{sim.rest_url}/markets/{t}", timeout=10).json()["market"] for t in tickers
    }
    for t, book in rest.items():
        bid = max(book["yes"], default=Decimal(0))
        ask = 1 - max(book["no"], default=Decimal(0))
        l1 = (bid, ask, book["yes"].get(bid, Decimal(0)), book["no"].get(1 - ask, Decimal(0)))
        m = markets[t]
        assert l1 == tuple(Decimal(m[k]) for k in L1_KEYS)
        if t in last_ticker:
            tk = last_ticker[t]
            assert l1 == tuple(
                Decimal(tk[k])
                for k in (
                    "yes_bid_dollars",
                    "yes_ask_dollars",
                    "yes_bid_size_fp",
                    "yes_ask_size_fp",
                )
            )
    # depth keeps the best levels of each side, still worst to best
    top = rest_books(sim, tickers, depth=2)
    for t, book in rest.items():
        for side in ("yes", "no"):
            assert list(top[t][side]) == sorted(book[side])[-2:]


def test_the_book_ledger_rebuilds_every_book_and_trades_add_up_to_volume(
    start_sim: Callable[..., SimulatorProcess],
) -> None:
    sim = start_sim(markets=60, rate=500)
    wait_for(lambda: sim.stats()["trades"] >= 300, timeout=30, what="300 trades")
    sim.set_faults(pause_updates=True)
    stats = sim.stats()
    lines = wait_for(
        lambda: (ls := sim.read_book_ledger()) and len(ls) >= stats["book_ledger_lines"] and ls,
        timeout=10,
        what="the book ledger flushed",
    )
    ticks = wait_for(
        lambda: (ls := sim.read_ledger()) and len(ls) >= stats["ledger_lines"] and ls,
        timeout=10,
        what="the ticker ledger flushed",
    )
    books: dict[str, Book] = {}
    traded: dict[str, Decimal] = defaultdict(Decimal)
    trade_ids = []
    for line in lines:
        assert line["channel"] in ("orderbook_delta", "trade") and "emitted_at_ms" in line
        if line["type"] in BOOK_TYPES:
            apply(books, line["msg"], line["type"], yes_scale=False)
        elif line["type"] == "trade":
            msg = line["msg"]
            assert Decimal(msg["yes_price_dollars"]) + Decimal(msg["no_price_dollars"]) == 1
            traded[msg["market_ticker"]] += Decimal(msg["count_fp"])
            trade_ids.append(msg["trade_id"])
    assert len(trade_ids) == len(set(trade_ids)) == stats["trades"]
    active = open_tickers(sim, 40)
    rest = rest_books(sim, active)
    assert {t: books[t] for t in active} == rest
    first: dict[str, Decimal] = {}
    final: dict[str, Decimal] = {}
    for tick in ticks:
        first.setdefault(tick["market_ticker"], Decimal(tick["volume_fp"]))
        final[tick["market_ticker"]] = Decimal(tick["volume_fp"])
    assert sum(traded.values()) > 0
    for t in final:
        assert final[t] - first[t] == traded.get(t, Decimal(0)), t
    # REST's tape is the same trades, newest first
    tape = requests.get(f"{sim.rest_url}/markets/trades", params={"limit": 1000}, timeout=10)
    assert [t["trade_id"] for t in tape.json()["trades"]] == trade_ids[::-1][:1000]


def test_trade_channel_numbers_every_trade_on_its_sid(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(markets=60, rate=500)

    async def body(ws: ClientConnection) -> list[dict[str, Any]]:
        await ws.send(json.dumps({"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"]}}))
        frames = [await recv(ws, 10) for _ in range(150)]
        await asyncio.to_thread(sim.set_faults, pause_updates=True)
        return frames + await drain(ws, 2)

    frames = run_ws(sim, signer, body)
    trades = [f for f in frames if f["type"] == "trade"]
    assert [f["seq"] for f in trades] == list(range(1, len(trades) + 1))
    for f in trades:
        assert {"trade_id", "yes_price_dollars", "count_fp", "taker_side", "ts", "ts_ms"} <= set(
            f["msg"]
        )
    ledger = wait_for(
        lambda: (
            (
                ids := [
                    ln["msg"]["trade_id"] for ln in sim.read_book_ledger() if ln["type"] == "trade"
                ]
            )
            and set(f["msg"]["trade_id"] for f in trades) <= set(ids)
            and ids
        ),
        timeout=10,
        what="the trades in the book ledger",
    )
    sent = [f["msg"]["trade_id"] for f in trades]
    start = ledger.index(sent[0])
    assert ledger[start : start + len(sent)] == sent


def test_drop_and_reorder_faults_show_as_seq_gaps_the_ledger_names(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(markets=60, rate=300)
    tickers = open_tickers(sim, 30)

    async def body(ws: ClientConnection) -> tuple[list[int], int]:
        await ws.send(
            json.dumps(
                {
                    "id": 1,
                    "cmd": "subscribe",
                    "params": {"channels": ["orderbook_delta"], "market_tickers": tickers},
                }
            )
        )
        frames = [await recv(ws, 10) for _ in range(len(tickers) + 20)]
        seen = [f["seq"] for f in frames if "seq" in f]

        async def read_until(done: Callable[[list[int]], bool], what: str) -> None:
            # the socket may hold frames queued before the fault: read until it shows
            deadline = asyncio.get_running_loop().time() + 20
            while not done(seen):
                assert asyncio.get_running_loop().time() < deadline, f"no {what}: {seen[-40:]}"
                frame = await recv(ws, 10)
                frames.append(frame)
                seen.append(frame["seq"])  # nothing but book frames follow the subscription

        state = await asyncio.to_thread(
            sim.set_faults, drop_frames={"channel": "orderbook_delta", "count": 1}
        )
        assert state["drop_frames"] == {"channel": "orderbook_delta", "count": 1}
        await read_until(lambda s: max(s) > len(s), "gap")
        await asyncio.to_thread(
            sim.set_faults, reorder_frames={"channel": "orderbook_delta", "count": 1}
        )
        await read_until(lambda s: any(b < a for a, b in itertools.pairwise(s)), "swap")
        frames += [await recv(ws, 10) for _ in range(20)]
        assert (await asyncio.to_thread(sim.faults))["reorder_frames"] is None
        seqs = [f["seq"] for f in frames if f["type"] in BOOK_TYPES]
        return seqs, frames[0]["msg"]["sid"]

    seqs, sid = run_ws(sim, signer, body)
    missing = sorted(set(range(1, max(seqs) + 1)) - set(seqs))
    assert len(missing) == 1 and len(seqs) == len(set(seqs))
    swapped = [(a, b) for a, b in itertools.pairwise(seqs) if b < a]
    assert len(swapped) == 1 and swapped[0][0] == swapped[0][1] + 1

    def faulted_lines() -> list[dict[str, Any]]:
        return [ln for ln in sim.read_book_ledger() if ln["type"] in ("dropped", "reordered")]

    # the ledger is written as the simulator gets to it: wait for both lines, not the first
    wait_for(lambda: len(faulted_lines()) >= 2, timeout=30, what="both faulted frames ledgered")
    faulted = faulted_lines()
    assert [(ln["type"], ln["sid"], ln["conn_id"]) for ln in faulted] == [
        ("dropped", sid, 1),
        ("reordered", sid, 1),
    ]
    assert faulted[0]["seq"] == missing[0]
    assert faulted[1]["seqs"] == [swapped[0][1], swapped[0][0]]
    assert sim.stats()["frames_dropped"] == 1


def test_update_subscription_and_its_errors_on_the_book_channel(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(markets=60, rate=50, extra_args=["--max-markets-per-subscription", "5"])
    a, b, c, *more = open_tickers(sim, 9)

    async def answer(ws: ClientConnection, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The frames up to the command's own answer (an error, ok or subscribed with its id)."""
        await ws.send(json.dumps(body))
        frame, before = await recv_until(
            ws, lambda f: f.get("id") == body["id"], 10, f"answer to {body['id']}"
        )
        return [*before, frame]

    def upd(cid: int, sid: int, action: str, **params: Any) -> dict[str, Any]:
        return {
            "id": cid,
            "cmd": "update_subscription",
            "params": {"sid": sid, "action": action, **params},
        }

    async def body(ws: ClientConnection) -> None:
        await answer(
            ws,
            {
                "id": 1,
                "cmd": "subscribe",
                "params": {"channels": ["orderbook_delta"], "market_tickers": [a]},
            },
        )
        sub = await recv_until(ws, lambda f: f["type"] == "orderbook_snapshot", 10)
        assert sub[0]["seq"] == 1 and sub[0]["msg"]["market_ticker"] == a
        frames = await answer(ws, upd(2, 1, "add_markets", market_tickers=[b, c]))
        ok = frames[-1]
        assert ok["type"] == "ok" and ok["sid"] == 1 and ok["msg"]["market_tickers"] == [a, b, c]
        snaps = [
            (await recv_until(ws, lambda f: f["type"] == "orderbook_snapshot", 10))[0]
            for _ in range(2)
        ]
        assert [s["msg"]["market_ticker"] for s in snaps] == [b, c]
        assert [s["seq"] for s in snaps] == [ok["seq"] + 1, ok["seq"] + 2]  # ok took a seq
        await ws.send(json.dumps(upd(3, 1, "get_snapshot", market_tickers=[c])))
        again, _ = await recv_until(ws, lambda f: f["type"] == "orderbook_snapshot", 10)
        assert again["msg"]["market_ticker"] == c and again["seq"] > snaps[-1]["seq"]
        frames = await answer(ws, upd(4, 1, "delete_markets", market_tickers=[a]))
        assert frames[-1]["msg"]["market_tickers"] == [b, c]
        # a repeat subscribe: ok, then snapshots only for the markets it adds (one unknown)
        frames = await answer(
            ws,
            {
                "id": 9,
                "cmd": "subscribe",
                "params": {"channels": ["orderbook_delta"], "market_tickers": [b, "KXNOPE-1"]},
            },
        )
        again_ok = frames[-1]
        assert again_ok["type"] == "ok" and again_ok["msg"]["market_tickers"] == [b, c, "KXNOPE-1"]
        unknown, between = await recv_until(ws, lambda f: f["type"] == "orderbook_snapshot", 10)
        assert unknown["msg"] == {"market_ticker": "KXNOPE-1", "market_id": ""}
        assert unknown["seq"] == again_ok["seq"] + 1 and not between
        # errors: ids (11), no tickers (14), over the per-subscription limit (26)
        assert error_code((await answer(ws, upd(5, 1, "get_snapshot")))[-1]) == 14
        ids = upd(6, 1, "add_markets", market_ids=["4ac7cb26-aacc-420e-860e-5e7f054d8aa8"])
        assert error_code((await answer(ws, ids))[-1]) == 11
        over = upd(7, 1, "add_markets", market_tickers=more)
        assert error_code((await answer(ws, over))[-1]) == 26
        # unsubscribing takes the next seq too
        await ws.send(json.dumps(upd(13, 1, "get_snapshot", market_tickers=[b])))
        mark, _ = await recv_until(ws, lambda f: f["type"] == "orderbook_snapshot", 10)
        frames = await answer(ws, {"id": 10, "cmd": "unsubscribe", "params": {"sids": [1]}})
        numbered = [f["seq"] for f in frames if "seq" in f]
        assert frames[-1]["type"] == "unsubscribed"
        assert numbered == list(range(mark["seq"] + 1, mark["seq"] + 1 + len(numbered)))
        await answer(
            ws,
            {
                "id": 11,
                "cmd": "subscribe",
                "params": {"channels": ["orderbook_delta"], "market_tickers": [a]},
            },
        )
        # an unasked error on the book subscription: its sid and the next seq; it stays
        await asyncio.to_thread(
            sim.set_faults, subscription_error={"channel": "orderbook_delta", "code": 14}
        )
        unasked, before = await recv_until(ws, lambda f: f["type"] == "error", 10, "error 14")
        assert "id" not in unasked and unasked["sid"] == 2 and error_code(unasked) == 14
        await ws.send(json.dumps(upd(14, 2, "get_snapshot", market_tickers=[a])))
        fresh, after = await recv_until(ws, lambda f: f["type"] == "orderbook_snapshot", 10)
        # one counter: the frames of sid 2 before it, the error, and those after, in order
        numbered = [f["seq"] for f in [*before, unasked, *after, fresh] if f.get("sid") == 2]
        assert numbered == list(range(numbered[0], numbered[0] + len(numbered)))
        assert numbered[0] <= unasked["seq"] < fresh["seq"] and fresh["sid"] == 2
        # a buffer overflow ends the book subscription with error 25
        await asyncio.to_thread(sim.set_faults, buffer_overflow=True)
        end, _ = await recv_until(ws, lambda f: f["type"] == "error", 10, "error 25")
        assert end["sid"] == 2 and error_code(end) == 25
        listed = await answer(ws, {"id": 12, "cmd": "list_subscriptions"})
        assert listed[-1]["msg"] == []

    run_ws(sim, signer, body)

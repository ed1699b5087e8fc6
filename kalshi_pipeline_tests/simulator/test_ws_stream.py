"""What the stream carries: ticker frames in the current shape, the ledger behind them,
heartbeats, and the hourly rollover on market_lifecycle_v2."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aiohttp
import requests

from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.helpers import wait_for
from kalshi_pipeline_tests.simulator.support import (
    TestSigner,
    command,
    expand,
    recv,
    recv_until,
    strip_emitted,
    ws_connect,
)

TICKER_KEYS = [
    "market_id",
    "market_ticker",
    "price_dollars",
    "yes_bid_dollars",
    "yes_ask_dollars",
    "volume_fp",
    "open_interest_fp",
    "dollar_volume",
    "dollar_open_interest",
    "yes_bid_size_fp",
    "yes_ask_size_fp",
    "last_trade_size_fp",
    "ts",
    "ts_ms",
    "time",
]
DOLLARS_RE = re.compile(r"^(0\.\d\d00|1\.0000)$")
FP_RE = re.compile(r"^\d+\.\d{2}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def check_ticker_msg(msg: dict[str, Any]) -> None:
    assert list(msg) == TICKER_KEYS
    assert UUID_RE.match(msg["market_id"])
    for k in ("price_dollars", "yes_bid_dollars", "yes_ask_dollars"):
        assert DOLLARS_RE.match(msg[k]), (k, msg[k])
    for k in ("volume_fp", "open_interest_fp", "yes_bid_size_fp", "yes_ask_size_fp"):
        assert FP_RE.match(msg[k]), (k, msg[k])
    assert FP_RE.match(msg["last_trade_size_fp"])
    assert msg["dollar_volume"] == int(Decimal(msg["volume_fp"]) // 2)
    assert msg["dollar_open_interest"] == int(Decimal(msg["open_interest_fp"]) // 2)
    assert Decimal(msg["yes_bid_dollars"]) < Decimal(msg["yes_ask_dollars"])
    assert (msg["yes_bid_dollars"] == "0.0000") == (msg["yes_bid_size_fp"] == "0.00")
    assert (msg["yes_ask_dollars"] == "1.0000") == (msg["yes_ask_size_fp"] == "0.00")
    assert msg["ts"] == msg["ts_ms"] // 1000
    assert TIME_RE.match(msg["time"])
    assert msg["time"][:19].replace("T", " ") in _utc(msg["ts_ms"])


def _utc(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def test_ticker_frames_match_the_ledger_and_sent_ranges(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(markets=300, rate=400)
    received: list[dict[str, Any]] = []

    async def run() -> None:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            first = await command(
                ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["ticker"]}}
            )
            assert first["type"] == "subscribed"
            while len(received) < 300:
                raw = await asyncio.wait_for(ws.recv(), 10)
                assert isinstance(raw, str) and raw.endswith("\n")
                frame = json.loads(raw)
                received_ms = time.time_ns() // 1_000_000
                assert frame["type"] == "ticker" and frame["sid"] == 1 and "seq" not in frame
                assert list(frame) == ["type", "sid", "msg", "sending_ts_ms"]
                sent = frame["sending_ts_ms"]
                assert isinstance(sent, int) and frame["msg"]["ts_ms"] <= sent <= received_ms
                received.append(frame["msg"])
            await ws.send(json.dumps({"id": 2, "cmd": "unsubscribe", "params": {"sids": [1]}}))
            _, rest = await recv_until(ws, lambda f: f["type"] == "unsubscribed", 10)
            received.extend(f["msg"] for f in rest)
        finally:
            await ws.close()

    asyncio.run(run())
    for msg in received:
        check_ticker_msg(msg)
    session = wait_for(
        lambda: [s for s in sim.sessions() if s["closed_at_ms"] is not None],
        timeout=10,
        what="session closed",
    )[0]
    indexes = expand(session["sent_ranges"])
    assert session["ticker_frames_sent"] == len(indexes) == len(received)
    assert indexes == sorted(indexes)
    ledger = wait_for(
        lambda: (lines := sim.read_ledger()) and len(lines) > indexes[-1] and lines,
        timeout=10,
        what="ledger flushed",
    )
    assert [strip_emitted(ledger[i]) for i in indexes] == received
    for line in ledger:
        assert list(line)[-1] == "emitted_at_ms"
        assert line["emitted_at_ms"] >= line["ts_ms"]
    assert sim.stats()["ledger_lines"] >= len(ledger)


def test_volume_never_decreases_and_open_interest_moves_only_with_it(
    start_sim: Callable[..., SimulatorProcess],
) -> None:
    sim = start_sim(markets=20, rate=1000)
    lines = wait_for(lambda: len(sim.read_ledger()) > 2000 and sim.read_ledger(), timeout=20)
    last: dict[str, tuple[Decimal, Decimal]] = {}
    for line in lines:
        check_ticker_msg(strip_emitted(line))
        vol, oi = Decimal(line["volume_fp"]), Decimal(line["open_interest_fp"])
        prev = last.get(line["market_ticker"])
        if prev is not None:
            # positions opened or closed by a trade: open interest moves by at most its size
            assert vol >= prev[0] and abs(oi - prev[1]) <= vol - prev[0] and oi >= 0
        last[line["market_ticker"]] = (vol, oi)
    # Consecutive updates of one market always differ in some ticker field.
    seen: dict[str, tuple[Any, ...]] = {}
    for line in lines:
        state = tuple(line[k] for k in TICKER_KEYS[2:12])
        assert seen.get(line["market_ticker"]) != state
        seen[line["market_ticker"]] = state


def test_heartbeat_pings_and_pongs(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(rate=0, ping_interval_s=0.5)

    async def run() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(sim.ws_url, headers=signer.ws_headers(), autoping=False) as ws,
        ):
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.PING
            assert msg.data == b"heartbeat"
            await ws.pong(msg.data)
            await ws.ping(b"are you there")
            while True:
                msg = await ws.receive(timeout=5)
                if msg.type == aiohttp.WSMsgType.PONG:
                    assert msg.data == b"are you there"
                    break
                assert msg.type == aiohttp.WSMsgType.PING

    asyncio.run(run())
    session = wait_for(lambda: sim.sessions(), timeout=5)[0]
    assert session["pings_sent"] >= 1
    assert sim.stats()["pings_sent"] >= 1


def test_hourly_rollover_emits_lifecycle_and_new_markets_appear(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(markets=40, rate=50, market_lifetime="3s", extra_args=["--hourly-strikes", "3"])
    frames: list[dict[str, Any]] = []
    open_counts: list[int] = []

    def hourly_open() -> int:
        resp = requests.get(
            f"{sim.rest_url}/markets",
            params={"series_ticker": "KXSIMHOURLY", "status": "open"},
            timeout=5,
        )
        return len(resp.json()["markets"])

    async def run() -> None:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            sub = await command(
                ws,
                {"id": 1, "cmd": "subscribe", "params": {"channels": ["market_lifecycle_v2"]}},
            )
            assert sub["msg"] == {"channel": "market_lifecycle_v2", "sid": 1}
            settled_events: set[str] = set()
            created_events: set[str] = set()
            while not (settled_events & created_events):
                frame = await recv(ws, 10)
                frames.append(frame)
                open_counts.append(await asyncio.to_thread(hourly_open))
                msg = frame["msg"]
                if frame["type"] == "market_lifecycle_v2":
                    event = msg["market_ticker"].rsplit("-", 1)[0]
                    if msg["event_type"] == "created":
                        created_events.add(event)
                    elif msg["event_type"] == "settled":
                        settled_events.add(event)
        finally:
            await ws.close()

    asyncio.run(run())
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert {f["sid"] for f in frames} == {1}
    assert min(open_counts) >= 1, "there was a moment with no hourly market open"
    kinds = [(f["type"], f["msg"].get("event_type")) for f in frames]
    assert ("event_lifecycle", None) in kinds
    assert {k for _, k in kinds} >= {"created", "determined", "settled"}
    assert not {k for _, k in kinds} & {"activated", "deactivated", "close_date_updated"}
    determined: dict[str, dict[str, Any]] = {}
    settled_after_determined = 0
    for f in frames:
        msg = f["msg"]
        if f["type"] == "event_lifecycle":
            assert msg["series_ticker"] == "KXSIMHOURLY"
            assert msg["event_ticker"].startswith("KXSIMHOURLY-")
        elif msg["event_type"] == "created":
            meta = msg["additional_metadata"]
            assert msg["close_ts"] > msg["open_ts"]
            assert meta["event_ticker"] == msg["market_ticker"].rsplit("-", 1)[0]
            assert meta["title"] and meta["yes_sub_title"]
            market = requests.get(f"{sim.rest_url}/markets/{msg['market_ticker']}", timeout=5)
            assert market.status_code == 200
            assert market.json()["market"]["status"] in (
                "initialized", "active", "closed", "determined", "finalized",
            )  # fmt: skip
        elif msg["event_type"] == "determined":
            assert msg["result"] in ("yes", "no") and msg["determination_ts"] > 0
            assert msg["settlement_value"] == ("1.0000" if msg["result"] == "yes" else "0.0000")
            determined[msg["market_ticker"]] = msg
        elif msg["event_type"] == "settled":
            assert set(msg) == {"market_ticker", "event_type", "settled_ts"}
            assert msg["settled_ts"] > 0
            final = requests.get(f"{sim.rest_url}/markets/{msg['market_ticker']}", timeout=5)
            market = final.json()["market"]
            assert market["status"] == "finalized"
            result = determined.get(msg["market_ticker"])  # None if determined before we joined
            if result is not None:
                assert market["result"] == result["result"]
                assert market["settlement_value_dollars"] == result["settlement_value"]
                settled_after_determined += 1
    assert settled_after_determined, "no market was seen both determined and settled"
    created = [f["msg"]["market_ticker"] for f in frames if f["msg"].get("event_type") == "created"]
    assert len(created) == len(set(created)), "a ticker was reused"
    # Once open, the new markets trade like any other: their ticker updates reach the ledger.
    wait_for(
        lambda: {line["market_ticker"] for line in sim.read_ledger()} & set(created),
        timeout=10,
        what="ticker updates for a rolled-over market",
    )

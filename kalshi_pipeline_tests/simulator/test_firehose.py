"""Firehose mode: N pre-encoded ticker frames sent first to every new ticker subscription."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.helpers import wait_for
from kalshi_pipeline_tests.simulator.support import (
    TestSigner,
    command,
    expand,
    strip_emitted,
    ws_connect,
)

N = 5000


def _firehose_lines(sim: SimulatorProcess) -> list[dict[str, Any]]:
    ledger = wait_for(lambda: len(sim.read_ledger()) >= N and sim.read_ledger(), timeout=5)
    return [strip_emitted(line) for line in ledger if line["market_ticker"].startswith("KXSIMFIRE")]


@pytest.mark.parametrize("first_channel", [None, "market_lifecycle_v2"], ids=["sid1", "sid2"])
def test_firehose_delivers_n_frames_first(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner, first_channel: str | None
) -> None:
    sim = start_sim(markets=50, rate=0, firehose=N)
    got: list[dict[str, Any]] = []

    async def run() -> None:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            if first_channel:
                await command(
                    ws, {"id": 1, "cmd": "subscribe", "params": {"channels": [first_channel]}}
                )
            subscribed_ms = time.time_ns() // 1_000_000
            sub = await command(
                ws, {"id": 2, "cmd": "subscribe", "params": {"channels": ["ticker"]}}
            )
            sid = sub["msg"]["sid"]
            while len(got) < N:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert frame["type"] == "ticker" and frame["sid"] == sid
                # stamped when sent, not when the frames were encoded at start
                assert frame["sending_ts_ms"] >= subscribed_ms
                got.append(frame["msg"])
        finally:
            await ws.close()

    asyncio.run(run())
    firehose = _firehose_lines(sim)
    assert got == firehose
    assert len({m["market_ticker"] for m in got}) > 1
    session = wait_for(lambda: sim.sessions(), timeout=5)[0]
    ledger = sim.read_ledger()
    indexes = expand(session["sent_ranges"])
    assert [strip_emitted(ledger[i]) for i in indexes[:N]] == got
    # REST shows each firehose market in the state of its last firehose frame.
    last = {m["market_ticker"]: m for m in got}
    ticker, msg = next(iter(last.items()))
    market = requests.get(f"{sim.rest_url}/markets/{ticker}", timeout=5).json()["market"]
    assert market["yes_bid_dollars"] == msg["yes_bid_dollars"]
    assert market["volume_fp"] == msg["volume_fp"]


def test_firehose_respects_the_market_filter(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(markets=50, rate=0, firehose=N)
    firehose = _firehose_lines(sim)
    wanted = sorted({m["market_ticker"] for m in firehose})[:3]
    expected = [m for m in firehose if m["market_ticker"] in wanted]
    got: list[dict[str, Any]] = []

    async def run() -> None:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            params = {"channels": ["ticker"], "market_tickers": wanted}
            await command(ws, {"id": 1, "cmd": "subscribe", "params": params})
            while len(got) < len(expected):
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                got.append(frame["msg"])
        finally:
            await ws.close()

    asyncio.run(run())
    assert got == expected

"""Faults from the control endpoint: REST storms, silence, drops, refused handshakes, malformed
frames; and the endpoint itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import requests
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kalshi_pipeline.simulator.control import is_loopback_peer
from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.helpers import wait_for
from kalshi_pipeline_tests.simulator.support import (
    TestSigner,
    command,
    expand,
    strip_emitted,
    ws_connect,
)

TOO_MANY = {"error": "too many requests"}


def test_token_bucket_answers_429_without_retry_after(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(rate=0, rest_tokens_per_s=10)  # one request a second, three in the bucket
    url = f"{sim.rest_url}/exchange/status"
    statuses = [requests.get(url, timeout=5) for _ in range(8)]
    # The bucket holds 3 s of budget: a full one lets three requests through at once.
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    limited = next(r for r in statuses if r.status_code != 200)
    assert limited.status_code == 429
    assert limited.json() == TOO_MANY
    assert limited.text == '{"error": "too many requests"}'
    assert "Retry-After" not in limited.headers
    assert not any(h.lower().startswith("x-ratelimit") for h in limited.headers)
    # A signed caller has its own bucket (per key id, not per address).
    path = "/trade-api/v2/exchange/status"
    signed = requests.get(url, headers=signer.headers("GET", path), timeout=5)
    assert signed.status_code == 200
    # No penalty: the next request succeeds once tokens have refilled.
    wait_for(lambda: requests.get(url, timeout=5).status_code == 200, timeout=5, interval=0.3)
    assert sim.stats()["rest_429"] >= 1


def test_429_storm_and_5xx_faults(start_sim: Callable[..., SimulatorProcess]) -> None:
    sim = start_sim(rate=0)
    url = f"{sim.rest_url}/markets?limit=1"
    state = sim.set_faults(http_429_s=30)
    assert 0 < state["http_429_s"] <= 30
    for _ in range(3):
        resp = requests.get(url, timeout=5)
        assert resp.status_code == 429
        assert resp.json() == TOO_MANY
        assert "Retry-After" not in resp.headers
    sim.set_faults(http_5xx_s=30)
    seen: dict[int, Any] = {}
    for _ in range(6):
        resp = requests.get(url, timeout=5)
        seen[resp.status_code] = resp.json()
    assert set(seen) == {500, 502, 503}
    shapes = {next(iter(body)) for body in seen.values()}
    assert shapes == {"error", "code", "msg"}, "nested, flat and bare error bodies"
    assert sim.clear_faults()["http_5xx_s"] is None
    assert requests.get(url, timeout=5).status_code == 200
    stats = sim.stats()
    assert stats["rest_429"] >= 3 and stats["rest_5xx"] >= 6


def test_slow_responses(start_sim: Callable[..., SimulatorProcess]) -> None:
    sim = start_sim(rate=0)
    sim.set_faults(slow_ms=300)
    started = time.monotonic()
    assert requests.get(f"{sim.rest_url}/exchange/status", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert sim.faults()["slow_ms"] == 300


def test_control_endpoint_validates_and_reports(start_sim: Callable[..., SimulatorProcess]) -> None:
    sim = start_sim(rate=0)
    for bad in ({"silence": 3}, {"silence_s": "long"}, {"malformed_rate": 2}, [1]):
        resp = requests.post(f"{sim.base_url}/_sim/faults", json=bad, timeout=5)
        assert resp.status_code == 400, bad
        assert "error" in resp.json()
    state = sim.set_faults(drop_every_s=30, malformed_rate=0.5)
    assert state["drop_every_s"] == 30 and state["malformed_rate"] == 0.5
    # A POST replaces the whole state: keys left out are off.
    state = sim.set_faults(slow_ms=1)
    assert state["drop_every_s"] is None and state["malformed_rate"] == 0.0
    assert sim.clear_faults()["slow_ms"] == 0
    stats = sim.stats()
    assert stats["markets_by_status"]["active"] >= 200 - 10
    assert stats["ledger_lines"] >= 190
    assert sim.sessions() == []


@pytest.mark.parametrize(
    ("remote", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.7", False),
        ("192.168.1.2", False),
        ("::ffff:10.0.0.7", False),
        ("2001:db8::1", False),
        ("", False),
        (None, False),
        ("not-an-ip", False),
    ],
)
def test_control_endpoint_accepts_loopback_peers_only(remote: str | None, allowed: bool) -> None:
    assert is_loopback_peer(remote) is allowed


def test_silence_stops_frames_and_pings_but_keeps_the_socket(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(rate=300, ping_interval_s=0.3)

    async def run() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(sim.ws_url, headers=signer.ws_headers(), autoping=False) as ws,
        ):
            await ws.send_str(
                json.dumps({"id": 1, "cmd": "subscribe", "params": {"channels": ["ticker"]}})
            )
            kinds = set()
            while not {"ping", "ticker"} <= kinds:
                msg = await ws.receive(timeout=5)
                kinds.add("ping" if msg.type == aiohttp.WSMsgType.PING else "ticker")
            ledger_before = (await asyncio.to_thread(sim.stats))["ledger_lines"]
            await asyncio.to_thread(sim.set_faults, silence_s=2.5)
            # Frames already on the wire may still arrive; after that, nothing at all.
            drain_until = time.monotonic() + 0.3
            while time.monotonic() < drain_until:
                with contextlib.suppress(TimeoutError):
                    await ws.receive(timeout=0.05)
            await ws.send_str(json.dumps({"id": 2, "cmd": "list_subscriptions"}))
            await ws.ping(b"anyone?")
            with pytest.raises(TimeoutError):
                msg = await ws.receive(timeout=1.5)
                raise AssertionError(f"received {msg!r} during silence")
            assert not ws.closed
            # The model and REST kept going meanwhile.
            stats = await asyncio.to_thread(sim.stats)
            assert stats["ledger_lines"] > ledger_before
            resp = await asyncio.to_thread(
                requests.get, f"{sim.rest_url}/exchange/status", timeout=5
            )
            assert resp.status_code == 200
            # After the window, updates flow again; nothing from the silence is replayed.
            msg = await ws.receive(timeout=10)
            while msg.type != aiohttp.WSMsgType.TEXT:
                msg = await ws.receive(timeout=10)
            frame = json.loads(msg.data)
            assert frame["type"] == "ticker"
            assert frame["msg"]["ts_ms"] > time.time() * 1000 - 2000

    asyncio.run(run())
    session = sim.sessions()[0]
    assert session["frames_dropped_silenced"] > 0
    assert session["closed_at_ms"] is None or session["closed_at_ms"] > session["opened_at_ms"]


def test_drop_connections_closes_every_socket(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(rate=100)

    async def run() -> None:
        sockets = [await ws_connect(sim.ws_url, signer) for _ in range(2)]
        for ws in sockets:
            await command(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["ticker"]}})
        result = await asyncio.to_thread(sim.set_faults, drop_connections=True)
        assert result["applied"]["drop_connections"] == 2
        for ws in sockets:
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        fresh = await ws_connect(sim.ws_url, signer)
        ok = await command(fresh, {"id": 1, "cmd": "list_subscriptions"})
        assert ok["type"] == "ok"
        await fresh.close()

    asyncio.run(run())
    sessions = wait_for(
        lambda: [s for s in sim.sessions() if s["closed_at_ms"] is not None], timeout=5
    )
    assert len(sessions) >= 2


def test_drop_every_n_seconds(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(rate=0, extra_args=["--drop-every-s", "0.5"])

    async def run() -> None:
        for _ in range(2):
            ws = await ws_connect(sim.ws_url, signer)
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)

    asyncio.run(run())
    assert sim.stats()["connections_dropped"] >= 2


def test_refused_handshakes_get_503(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(rate=0)
    sim.set_faults(refuse_handshakes_s=30)

    async def refused() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as info:
            ws = await connect(sim.ws_url, additional_headers=signer.ws_headers())
            await ws.close()
        return info.value

    err = asyncio.run(refused())
    assert err.response.status_code == 503
    assert json.loads(err.response.body)["error"]["code"] == "service_unavailable"
    sim.clear_faults()

    async def accepted() -> None:
        ws = await ws_connect(sim.ws_url, signer)
        await ws.close()

    asyncio.run(accepted())
    assert sim.stats()["handshakes_refused"] == 1


def test_malformed_frames_are_extra_and_not_in_the_ledger(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(markets=100, rate=300)
    sim.set_faults(malformed_rate=1.0)
    good: list[dict[str, Any]] = []
    bad: list[str] = []

    async def run() -> None:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            await ws.send(
                json.dumps({"id": 1, "cmd": "subscribe", "params": {"channels": ["ticker"]}})
            )
            previous_good = False
            while len(good) < 100:
                raw = await asyncio.wait_for(ws.recv(), 10)
                assert isinstance(raw, str)
                frame = _valid_ticker(raw)
                if frame is None:
                    assert previous_good, "a malformed frame must follow a real one"
                    bad.append(raw)
                    previous_good = False
                elif frame["type"] == "ticker":
                    assert not previous_good or not good, "every real frame gets an extra one"
                    good.append(frame["msg"])
                    previous_good = True
            await ws.send(json.dumps({"id": 2, "cmd": "unsubscribe", "params": {"sids": [1]}}))
            # Frames queued before the unsubscribe still arrive first, malformed ones included,
            # so this read must not parse them as JSON the way `recv_until` does.
            while True:
                raw = await asyncio.wait_for(ws.recv(), 10)
                assert isinstance(raw, str)
                frame = _valid_ticker(raw)
                if frame is not None and frame["type"] == "unsubscribed":
                    break
        finally:
            await ws.close()

    asyncio.run(run())
    assert len(bad) >= 99
    session = wait_for(
        lambda: [s for s in sim.sessions() if s["closed_at_ms"] is not None], timeout=5
    )[0]
    assert session["malformed_sent"] >= len(bad)
    indexes = expand(session["sent_ranges"])
    ledger = wait_for(
        lambda: (lines := sim.read_ledger()) and len(lines) > indexes[-1] and lines, timeout=5
    )
    assert [strip_emitted(ledger[i]) for i in indexes][: len(good)] == good
    for line in ledger:
        assert isinstance(line["market_ticker"], str) and line["market_ticker"].startswith("KX")


def _valid_ticker(raw: str) -> dict[str, Any] | None:
    try:
        frame = json.loads(raw)
    except ValueError:
        return None
    if frame.get("type") != "ticker":
        return None if frame.get("type") not in ("subscribed", "ok", "unsubscribed") else frame
    msg = frame.get("msg", {})
    if not isinstance(msg.get("market_ticker"), str) or not isinstance(msg.get("ts_ms"), int):
        return None
    return dict(frame)


def test_silence_covers_new_sockets_only_when_asked(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(rate=0)

    async def answered() -> bool:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            await ws.send(json.dumps({"id": 1, "cmd": "list_subscriptions"}))
            try:
                await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                return False
            return True
        finally:
            await ws.close()

    sim.set_faults(silence_s=30)
    assert asyncio.run(answered()), "a socket opened during the silence still works"
    sim.set_faults(silence_s=30, silence_new_sockets=True)
    assert not asyncio.run(answered())
    sim.clear_faults()
    assert asyncio.run(answered())


def test_pause_updates_freezes_the_published_state_until_cleared(tmp_path) -> None:
    import requests

    from kalshi_pipeline.simulator.process import SimulatorProcess
    from kalshi_pipeline_tests.helpers import read_ledger

    ledger = tmp_path / "ledger.jsonl"
    with SimulatorProcess(
        markets=50, rate=500, seed=3, ledger=ledger, kalshi_home=tmp_path / "h"
    ) as sim:
        wait_for(lambda: len(read_ledger(ledger)) > 200, timeout=30, what="updates")
        sim.set_faults(pause_updates=True)
        assert sim.faults()["pause_updates"] is True
        paused_at = sim.stats()["ledger_lines"]
        for _ in range(30):  # at 500 updates/s this takes long enough to see dozens
            requests.get(f"{sim.rest_url}/exchange/status", timeout=10)
        assert sim.stats()["ledger_lines"] == paused_at
        sim.clear_faults()
        wait_for(
            lambda: sim.stats()["ledger_lines"] > paused_at, timeout=30, what="publishing resumed"
        )


def test_paused_shard_stops_trading_there_and_shows_in_the_status(
    start_sim: Callable[..., SimulatorProcess],
) -> None:
    sim = start_sim(markets=300, rate=300)
    status_url = f"{sim.rest_url}/exchange/status"
    markets = requests.get(f"{sim.rest_url}/markets", params={"limit": 1000}, timeout=10).json()
    crypto = {m["ticker"] for m in markets["markets"] if m["exchange_index"] == 2}
    assert crypto, "the universe has markets on the crypto shard"

    state = sim.set_faults(paused_shards=[2])
    assert state["paused_shards"] == [2]
    paused_from = sim.stats()["ledger_lines"]
    status = requests.get(status_url, timeout=10).json()
    trading = {s["exchange_index"]: s["trading_active"] for s in status["exchange_index_statuses"]}
    assert trading == {0: True, 1: True, 2: False, 3: True}
    assert status["trading_active"] is True  # the other shards still trade
    new_lines = wait_for(
        lambda: (lines := sim.read_ledger()[paused_from:]) and len(lines) >= 300 and lines,
        timeout=30,
        what="300 updates while shard 2 is paused",
    )
    assert not crypto & {line["market_ticker"] for line in new_lines}

    sim.clear_faults()
    resumed_from = sim.stats()["ledger_lines"]
    wait_for(
        lambda: crypto & {line["market_ticker"] for line in sim.read_ledger()[resumed_from:]},
        timeout=30,
        what="an update on the crypto shard once it trades again",
    )
    assert requests.get(status_url, timeout=10).json()["exchange_index_statuses"][2][
        "trading_active"
    ]


def test_paused_shards_must_name_known_shards(start_sim: Callable[..., SimulatorProcess]) -> None:
    sim = start_sim(rate=0)
    for bad in ([7], "2", [True], [2.0]):
        resp = requests.post(f"{sim.base_url}/_sim/faults", json={"paused_shards": bad}, timeout=5)
        assert resp.status_code == 400, bad
        assert "paused_shards" in resp.json()["error"] and "[0, 1, 2, 3]" in resp.json()["error"]
    assert sim.faults()["paused_shards"] == []

"""WebSocket commands, acks and error codes (§3.2-3.5)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import requests
from websockets.asyncio.client import ClientConnection

from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.simulator.support import (
    TestSigner,
    command,
    error_code,
    recv,
    recv_until,
    responses,
    ws_connect,
)

Session = Callable[[ClientConnection], Awaitable[None]]


def run_ws(sim: SimulatorProcess, signer: TestSigner, body: Session) -> None:
    async def main() -> None:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            await body(ws)
        finally:
            await ws.close()

    asyncio.run(main())


def open_tickers(sim: SimulatorProcess, n: int) -> list[str]:
    markets = requests.get(
        f"{sim.rest_url}/markets", params={"status": "open", "limit": n}, timeout=10
    ).json()["markets"]
    return [m["ticker"] for m in markets]


def sub(channels: list[str], cid: int = 1, **params: Any) -> dict[str, Any]:
    return {"id": cid, "cmd": "subscribe", "params": {"channels": channels, **params}}


ERROR_CASES: list[tuple[str, Any, int]] = [
    ("invalid JSON", "{not json", 1),
    ("not an object", "[1,2]", 1),
    ("id not an integer", {"id": "7", "cmd": "list_subscriptions"}, 1),
    ("cmd not a string", {"id": 7, "cmd": 3}, 1),
    ("params not an object", {"id": 7, "cmd": "subscribe", "params": [1]}, 1),
    ("channels not a list", {"id": 7, "cmd": "subscribe", "params": {"channels": "ticker"}}, 1),
    ("subscribe without params", {"id": 7, "cmd": "subscribe"}, 2),
    ("subscribe without channels", {"id": 7, "cmd": "subscribe", "params": {}}, 3),
    ("subscribe with no channel", sub([], 7), 3),
    ("unsubscribe without sids", {"id": 7, "cmd": "unsubscribe", "params": {}}, 4),
    ("unknown command", {"id": 7, "cmd": "subscribe_all"}, 5),
    ("unknown sid", {"id": 7, "cmd": "unsubscribe", "params": {"sids": [99]}}, 7),
    ("unknown channel", sub(["tickers"], 7), 8),
    ("ticker_v2 was retired", sub(["ticker_v2"], 7), 8),
    ("private fill channel", sub(["fill"], 7), 9),
    ("private user_orders channel", sub(["user_orders"], 7), 9),
    (
        "orderbook by market id",
        sub(["orderbook_delta"], 7, market_id="4ac7cb26-aacc-420e-860e-5e7f054d8aa8"),
        11,
    ),
    (
        "use_yes_price not bool",
        sub(["orderbook_delta"], 7, market_ticker="X-1", use_yes_price="yes"),
        11,
    ),
    ("market_tickers not strings", sub(["ticker"], 7, market_tickers=[1, 2]), 11),
    ("market_tickers not a list", sub(["ticker"], 7, market_tickers="A,B"), 11),
    ("malformed market_id", sub(["ticker"], 7, market_id="not-a-uuid"), 11),
    ("send_initial_snapshot not bool", sub(["ticker"], 7, send_initial_snapshot="yes"), 11),
    (
        "update with two sids",
        {
            "id": 7,
            "cmd": "update_subscription",
            "params": {"sids": [1, 2], "action": "add_markets", "market_tickers": ["A"]},
        },
        12,
    ),
    (
        "update with no sid",
        {"id": 7, "cmd": "update_subscription", "params": {"action": "add_markets"}},
        12,
    ),
    (
        "update with an unknown action",
        {"id": 7, "cmd": "update_subscription", "params": {"sid": 1, "action": "replace"}},
        13,
    ),
    ("orderbook without markets", sub(["orderbook_delta"], 7), 14),
    (
        "update without action",
        {"id": 7, "cmd": "update_subscription", "params": {"sid": 1, "market_tickers": ["A"]}},
        15,
    ),
    (
        "subscription over the market limit",
        sub(["ticker"], 7, market_tickers=[f"KXNOPE-{i}" for i in range(51)]),
        26,
    ),
]


@pytest.mark.parametrize(("case", "body", "code"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_codes(
    sim: SimulatorProcess, signer: TestSigner, case: str, body: Any, code: int
) -> None:
    async def body_fn(ws: ClientConnection) -> None:
        frame = await command(ws, body if isinstance(body, str) else json.dumps(body))
        assert error_code(frame) == code, (case, frame)
        assert isinstance(frame["msg"]["msg"], str) and frame["msg"]["msg"]
        if isinstance(body, dict) and isinstance(body.get("id"), int):
            assert frame["id"] == body["id"]
        # The connection survives every command error.
        assert (await command(ws, {"id": 99, "cmd": "list_subscriptions"}))["type"] == "ok"

    run_ws(sim, signer, body_fn)


def test_error_messages_follow_the_spec_table(sim: SimulatorProcess, signer: TestSigner) -> None:
    async def body(ws: ClientConnection) -> None:
        assert await command(ws, sub(["ticker_v2"], 3)) == {
            "type": "error",
            "id": 3,
            "msg": {"code": 8, "msg": "Unknown channel name"},
        }

    run_ws(sim, signer, body)


def test_subscription_scoped_errors(sim: SimulatorProcess, signer: TestSigner) -> None:
    tickers = open_tickers(sim, 60)

    async def body(ws: ClientConnection) -> None:
        await command(ws, sub(["ticker"], 1, market_tickers=tickers[:2]))
        lifecycle = await command(ws, sub(["market_lifecycle_v2"], 2))
        life_sid = lifecycle["msg"]["sid"]

        async def update(cid: int, **params: Any) -> dict[str, Any]:
            return await command(ws, {"id": cid, "cmd": "update_subscription", "params": params})

        frame = await update(3, sid=1, action="get_snapshot", market_tickers=tickers[:1])
        assert (error_code(frame), frame["sid"]) == (13, 1)
        frame = await update(4, sid=1, action="add_markets")
        assert (error_code(frame), frame["sid"]) == (14, 1)
        frame = await update(5, sid=42, action="add_markets", market_tickers=["A"])
        assert error_code(frame) == 7
        frame = await update(6, sid=1, action="add_markets", market_tickers=tickers[2:60])
        assert (error_code(frame), frame["sid"]) == (26, 1)
        frame = await update(7, sid=life_sid, action="add_markets", market_tickers=["A"])
        assert error_code(frame) == 13
        frame = await update(8, sids=[1], action="delete_markets", market_ids=["zz"])
        assert error_code(frame) == 11
        frame = await command(ws, sub(["ticker"], 9, market_tickers=tickers[2:51]))
        assert (error_code(frame), frame["sid"]) == (26, 1)

    run_ws(sim, signer, body)


def test_subscribe_ack_shapes_and_sids(sim: SimulatorProcess, signer: TestSigner) -> None:
    tickers = open_tickers(sim, 5)

    async def body(ws: ClientConnection) -> None:
        frames = await responses(
            ws,
            sub(["ticker", "market_lifecycle_v2", "ticker_v2"], 1, market_tickers=tickers[:2]),
            3,
        )
        assert frames[0] == {"type": "subscribed", "id": 1, "msg": {"channel": "ticker", "sid": 1}}
        assert frames[1] == {
            "type": "subscribed",
            "id": 1,
            "msg": {"channel": "market_lifecycle_v2", "sid": 2},
        }
        assert error_code(frames[2]) == 8
        # A repeat subscribe adds markets and acks with the full list, never error 6.
        ok = await command(ws, sub(["ticker"], 2, market_tickers=tickers[1:4]))
        assert ok == {"type": "ok", "id": 2, "sid": 1, "msg": {"market_tickers": tickers[:4]}}
        ok = await command(
            ws,
            {
                "id": 3,
                "cmd": "update_subscription",
                "params": {"sids": [1], "action": "delete_markets", "market_tickers": tickers[:1]},
            },
        )
        assert ok == {"type": "ok", "id": 3, "sid": 1, "msg": {"market_tickers": tickers[1:4]}}
        ok = await command(
            ws,
            {
                "id": 4,
                "cmd": "update_subscription",
                "params": {
                    "sid": 1,
                    "action": "add_markets",
                    "market_tickers": tickers[4:5],
                    "skip_ticker_ack": True,
                },
            },
        )
        assert ok == {"type": "ok", "id": 4, "sid": 1}
        # Sequenced channels: the repeat-subscribe ack and the unsubscribe consume seq.
        ok = await command(ws, sub(["market_lifecycle_v2"], 5))
        assert ok["type"] == "ok" and ok["sid"] == 2 and ok["seq"] >= 1
        listed = await command(ws, {"id": 6, "cmd": "list_subscriptions"})
        assert listed == {
            "type": "ok",
            "id": 6,
            "msg": [{"channel": "ticker", "sid": 1}, {"channel": "market_lifecycle_v2", "sid": 2}],
        }
        gone = await responses(ws, {"id": 7, "cmd": "unsubscribe", "params": {"sids": [1, 2]}}, 2)
        assert gone[0] == {"type": "unsubscribed", "id": 7, "sid": 1}
        assert gone[1]["type"] == "unsubscribed" and gone[1]["sid"] == 2
        assert gone[1]["seq"] == ok["seq"] + 1
        # sids keep counting up on this connection.
        again = await command(ws, sub(["ticker"], 8))
        assert again["msg"]["sid"] == 3

    run_ws(sim, signer, body)

    # A new connection starts again at sid 1, and id 0 means "no id".
    async def fresh(ws: ClientConnection) -> None:
        frame = await command(ws, sub(["ticker"], 0))
        assert frame == {"type": "subscribed", "msg": {"channel": "ticker", "sid": 1}}

    run_ws(sim, signer, fresh)


def test_ticker_subscription_filters_by_ticker_and_id(
    sim: SimulatorProcess, signer: TestSigner
) -> None:
    markets = requests.get(
        f"{sim.rest_url}/markets", params={"status": "open", "limit": 4}, timeout=10
    ).json()["markets"]
    tickers = [m["ticker"] for m in markets]

    async def body(ws: ClientConnection) -> None:
        await command(
            ws, sub(["ticker"], 1, market_tickers=tickers[:2], send_initial_snapshot=True)
        )
        snapshot = [await recv(ws) for _ in range(2)]
        assert [f["msg"]["market_ticker"] for f in snapshot] == tickers[:2]
        for f in snapshot:
            url = f"{sim.rest_url}/markets/{f['msg']['market_ticker']}"
            rest = await asyncio.to_thread(requests.get, url, timeout=5)
            assert rest.status_code == 200
        # Ids resolve to the same markets; learn one from the snapshot.
        market_id = snapshot[0]["msg"]["market_id"]
        ok = await command(
            ws,
            {
                "id": 2,
                "cmd": "update_subscription",
                "params": {"sid": 1, "action": "add_markets", "market_ids": [market_id]},
            },
        )
        assert ok["msg"]["market_ids"] == [market_id]

    run_ws(sim, signer, body)


def test_trade_channel_is_sequenced(sim: SimulatorProcess, signer: TestSigner) -> None:
    async def body(ws: ClientConnection) -> None:
        await command(ws, sub(["trade"], 1))
        seqs = []
        while len(seqs) < 3:
            frame, _ = await recv_until(ws, lambda f: f["type"] == "trade", 20, "a trade")
            assert frame["sid"] == 1
            msg = frame["msg"]
            assert float(msg["yes_price_dollars"]) + float(
                msg["no_price_dollars"]
            ) == pytest.approx(1)
            assert msg["taker_outcome_side"] in ("yes", "no")
            seqs.append(frame["seq"])
        assert seqs == [1, 2, 3]

    run_ws(sim, signer, body)


def test_command_rate_limit_is_error_27(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(rate=0, extra_args=["--max-commands-per-s", "20"])

    async def body(ws: ClientConnection) -> None:
        for i in range(1, 41):
            await ws.send(json.dumps({"id": i, "cmd": "list_subscriptions"}))
        frames = [await recv(ws) for _ in range(40)]
        limited = [f for f in frames if f["type"] == "error"]
        assert limited and all(error_code(f) == 27 for f in limited)
        assert {f["id"] for f in limited} <= set(range(21, 41))
        assert sum(f["type"] == "ok" for f in frames) >= 20

    run_ws(sim, signer, body)


@pytest.mark.parametrize(("key", "code"), [("channel_error", 10), ("buffer_overflow", 25)])
def test_terminal_errors_from_the_control_endpoint(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner, key: str, code: int
) -> None:
    sim = start_sim(rate=200)

    async def body(ws: ClientConnection) -> None:
        await command(ws, sub(["ticker", "market_lifecycle_v2"], 1))
        await recv_until(ws, lambda f: f["type"] == "ticker", 10, "a ticker")
        result = await asyncio.to_thread(sim.set_faults, **{key: True})
        assert result["applied"][key] == 1
        frame, _ = await recv_until(ws, lambda f: f["type"] == "error", 10, f"error {code}")
        assert frame == {"type": "error", "sid": 1, "msg": frame["msg"]}
        assert error_code(frame) == code
        listed = await command(ws, {"id": 2, "cmd": "list_subscriptions"})
        assert listed["msg"] == [{"channel": "market_lifecycle_v2", "sid": 2}]
        # Resubscribing works and gets a new sid.
        again = await command(ws, sub(["ticker"], 3))
        assert again["msg"]["sid"] == 3

    run_ws(sim, signer, body)


def test_slow_reader_gets_error_25(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    """Live updates pile up behind a firehose the client does not read: buffer overflow."""
    sim = start_sim(rate=2000, firehose=60_000, extra_args=["--send-buffer-bytes", "50000"])

    async def body(ws: ClientConnection) -> None:
        await ws.send(json.dumps(sub(["ticker"], 1)))
        await asyncio.sleep(1.0)
        frame, _ = await recv_until(ws, lambda f: f["type"] == "error", 30, "error 25")
        assert frame["sid"] == 1 and error_code(frame) == 25
        listed = await command(ws, {"id": 2, "cmd": "list_subscriptions"})
        assert listed["msg"] == []

    run_ws(sim, signer, body)

"""`KalshiWebSocket` against the simulator: commands, every error code, the retired channel,
and how a connection ends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kalshi_pipeline.kalshi import errors
from kalshi_pipeline.kalshi.errors import (
    ConnectionClosedError,
    FrameDecodeError,
    KalshiWebSocketError,
    RetiredChannelError,
    SilenceTimeoutError,
    SubscriptionError,
)
from kalshi_pipeline.kalshi.messages import (
    ErrorMessage,
    EventLifecycle,
    MarketLifecycle,
    Message,
    Ok,
    Subscribed,
    SubscriptionInfo,
    Tick,
    Unsubscribed,
    decode_frame,
)
from kalshi_pipeline.kalshi.rest import RestClient
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.kalshi.websocket import Frame, KalshiWebSocket
from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.helpers import wait_for
from kalshi_pipeline_tests.kalshi.support import (
    MAX_COMMANDS_PER_S,
    MAX_MARKETS_PER_SUBSCRIPTION,
    run,
    session_of,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def open_tickers(simulator: SimulatorProcess) -> list[str]:
    settings = KalshiSettings.for_env("local", rest_url=simulator.rest_url)
    with RestClient(settings) as client:
        tickers = [m.ticker for m in client.get_markets(status="open")]
    assert len(tickers) > MAX_MARKETS_PER_SUBSCRIPTION
    return tickers


def connect(settings: KalshiSettings, **kwargs: Any) -> KalshiWebSocket:
    kwargs.setdefault("command_timeout_s", 5.0)
    return KalshiWebSocket(settings.ws_url, settings.signer(), **kwargs)


async def next_message(
    ws: KalshiWebSocket, wanted: Callable[[Message], bool], timeout_s: float
) -> tuple[Message, list[Frame]]:
    """Receive until a frame decodes to a message `wanted` accepts; returns it and every frame."""
    frames: list[Frame] = []
    async with asyncio.timeout(timeout_s):
        while True:
            frame = await ws.recv()
            frames.append(frame)
            try:
                message = decode_frame(frame.data)
            except FrameDecodeError:
                continue
            if wanted(message):
                return message, frames


async def recv_until_end(ws: KalshiWebSocket, timeout_s: float) -> tuple[list[Frame], Exception]:
    """Every frame until the connection's end, and the error that ended it."""
    frames: list[Frame] = []
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                frames.append(await ws.recv())
            except KalshiWebSocketError as exc:
                return frames, exc


def closed_session(sim: SimulatorProcess, before: int) -> tuple[dict[str, Any], int]:
    """The simulator's record of the connection opened after `before` others, once it has
    recorded its close, and how many frames it sent on it."""
    record = wait_for(
        lambda: (s := session_of(sim, before))["closed_at_ms"] is not None and s,
        timeout=10,
        what="the simulator to record the close",
    )
    sent = sum(
        record[k]
        for k in (
            "ticker_frames_sent",
            "snapshot_frames_sent",
            "data_frames_sent",
            "control_frames_sent",
            "malformed_sent",
        )
    )
    return record, sent


# --------------------------------------------------------------------------- commands


def test_subscribe_update_list_and_unsubscribe_change_the_subscription(
    signed_settings: KalshiSettings, open_tickers: list[str]
) -> None:
    settings = signed_settings  # handshake signed by an Ed25519 key, then by an RSA key
    a, b, c, d = open_tickers[:4]

    async def scenario() -> None:
        async with connect(settings) as ws:
            first = await ws.subscribe(["ticker"], market_tickers=[a, b])
            assert first == [Subscribed(cmd_id=1, channel="ticker", sid=1)]
            assert ws.subscriptions == {1: "ticker"}

            again = await ws.subscribe(["ticker"], market_tickers=[b, c])
            assert len(again) == 1
            assert isinstance(again[0], Ok)
            assert (again[0].cmd_id, again[0].sid) == (2, 1)
            assert again[0].market_tickers == [a, b, c]  # the full list, not just the new one

            added = await ws.add_markets(1, [d])
            assert added.sid == 1
            assert added.market_tickers == [a, b, c, d]
            deleted = await ws.delete_markets(1, [a, c])
            assert deleted.market_tickers == [b, d]

            lifecycle = await ws.subscribe(["market_lifecycle_v2"])
            assert lifecycle == [Subscribed(cmd_id=5, channel="market_lifecycle_v2", sid=2)]
            assert ws.subscriptions == {1: "ticker", 2: "market_lifecycle_v2"}
            assert await ws.list_subscriptions() == [
                SubscriptionInfo(channel="ticker", sid=1),
                SubscriptionInfo(channel="market_lifecycle_v2", sid=2),
            ]

            gone = await ws.unsubscribe([1])
            assert [(u.cmd_id, u.sid) for u in gone] == [(7, 1)]
            assert ws.subscriptions == {2: "market_lifecycle_v2"}
            assert await ws.list_subscriptions() == [
                SubscriptionInfo(channel="market_lifecycle_v2", sid=2)
            ]

    run(scenario())


def test_deleted_markets_stop_and_added_markets_start_flowing(
    settings: KalshiSettings, open_tickers: list[str]
) -> None:
    async def scenario() -> None:
        async with connect(settings) as ws:
            await ws.subscribe(["ticker"], market_tickers=open_tickers[:20])
            await ws.delete_markets(1, open_tickers[:20])
            await ws.add_markets(1, open_tickers[20:40])
            marker = await ws.command("list_subscriptions")
            # every ticker frame after the `add_markets` ack belongs to the new markets
            seen: set[str] = set()
            acked = False
            async with asyncio.timeout(20):
                while len(seen) < 3:
                    message = decode_frame((await ws.recv()).data)
                    if message == marker[0]:
                        acked = True
                    elif isinstance(message, Tick) and acked:
                        assert message.market_ticker in open_tickers[20:40]
                        seen.add(message.market_ticker)

    run(scenario())


def test_unsubscribe_naming_a_sid_twice_returns_instead_of_timing_out(
    settings: KalshiSettings, open_tickers: list[str]
) -> None:
    async def scenario() -> None:
        async with connect(settings, command_timeout_s=3.0) as ws:
            await ws.subscribe(["ticker"], market_tickers=open_tickers[:1])
            gone = await ws.unsubscribe([1, 1])
            assert [u.sid for u in gone] == [1]
            assert ws.subscriptions == {}

    run(scenario())


# --------------------------------------------------------------------------- error codes


async def send_raw(ws: KalshiWebSocket, cmd: str, params: Any = None) -> None:
    """A command as given, raising the error frame that answers it."""
    for response in await ws.command(cmd, params):
        if isinstance(response, ErrorMessage):
            raise response.to_exception()


Case = Callable[[KalshiWebSocket, list[str]], Awaitable[Any]]

ERROR_CASES: dict[int, list[tuple[str, Case]]] = {
    1: [("params-not-an-object", lambda ws, t: send_raw(ws, "subscribe", ["ticker"]))],
    2: [
        ("subscribe-without-params", lambda ws, t: send_raw(ws, "subscribe")),
        ("unsubscribe-without-params", lambda ws, t: send_raw(ws, "unsubscribe")),
    ],
    3: [
        ("no-channels", lambda ws, t: ws.subscribe([])),
        ("params-without-channels", lambda ws, t: send_raw(ws, "subscribe", {})),
    ],
    4: [("unsubscribe-no-sids", lambda ws, t: ws.unsubscribe([]))],
    5: [("unknown-command", lambda ws, t: send_raw(ws, "subscribe_all", {"channels": ["x"]}))],
    7: [
        ("unsubscribe-unknown-sid", lambda ws, t: ws.unsubscribe([99])),
        ("update-unknown-sid", lambda ws, t: ws.add_markets(99, t[:1])),
    ],
    8: [
        ("unknown-channel", lambda ws, t: ws.subscribe(["tickers"])),
        ("raw-ticker-v2", lambda ws, t: send_raw(ws, "subscribe", {"channels": ["ticker_v2"]})),
    ],
    9: [("private-channel", lambda ws, t: ws.subscribe(["fill"]))],
    11: [
        ("malformed-market-id", lambda ws, t: ws.subscribe(["ticker"], market_ids=["not-a-uuid"])),
        (
            "flag-not-a-bool",
            lambda ws, t: send_raw(
                ws, "subscribe", {"channels": ["ticker"], "send_initial_snapshot": "yes"}
            ),
        ),
    ],
    12: [
        (
            "two-sids",
            lambda ws, t: send_raw(
                ws,
                "update_subscription",
                {"sids": [1, 2], "action": "add_markets", "market_tickers": t[:1]},
            ),
        )
    ],
    13: [
        (
            "unknown-action",
            lambda ws, t: send_raw(
                ws,
                "update_subscription",
                {"sids": [1], "action": "replace_markets", "market_tickers": t[:1]},
            ),
        ),
        ("snapshot-of-ticker", lambda ws, t: ws.update_subscription(1, "get_snapshot")),
    ],
    14: [
        ("orderbook-without-markets", lambda ws, t: ws.subscribe(["orderbook_delta"])),
        ("add-no-markets", lambda ws, t: ws.update_subscription(1, "add_markets")),
    ],
    15: [
        (
            "no-action",
            lambda ws, t: send_raw(
                ws, "update_subscription", {"sids": [1], "market_tickers": t[:1]}
            ),
        )
    ],
    26: [
        (
            "too-many-markets",
            lambda ws, t: ws.subscribe(
                ["trade"], market_tickers=t[: MAX_MARKETS_PER_SUBSCRIPTION + 1]
            ),
        ),
        (
            "add-beyond-the-cap",
            lambda ws, t: ws.add_markets(1, t[2 : MAX_MARKETS_PER_SUBSCRIPTION + 2]),
        ),
    ],
}


@pytest.mark.parametrize(
    ("code", "case"),
    [(code, case) for code, cases in ERROR_CASES.items() for case in cases],
    ids=[f"{code}-{name}" for code, cases in ERROR_CASES.items() for name, _ in cases],
)
def test_each_server_error_code_raises_its_named_error(
    settings: KalshiSettings, open_tickers: list[str], code: int, case: tuple[str, Case]
) -> None:
    _, attempt = case

    async def scenario() -> None:
        async with connect(settings) as ws:
            # sid 1 exists (a ticker subscription on two markets) for the update cases
            await ws.subscribe(["ticker"], market_tickers=open_tickers[:2])
            with pytest.raises(SubscriptionError) as caught:
                await attempt(ws, open_tickers)
            assert type(caught.value) is errors.ERROR_CODES[code]
            assert caught.value.code == code
            assert caught.value.terminal is False
            assert caught.value.server_msg  # the server's own words are kept
            # the connection is still usable and sid 1 untouched
            assert ws.subscriptions == {1: "ticker"}
            assert await ws.list_subscriptions() == [SubscriptionInfo(channel="ticker", sid=1)]

    run(scenario())


def test_too_many_commands_in_a_second_raise_too_many_requests(settings: KalshiSettings) -> None:
    async def scenario() -> None:
        async with connect(settings) as ws:
            results = await asyncio.gather(
                *(ws.list_subscriptions() for _ in range(MAX_COMMANDS_PER_S + 10)),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, BaseException)]
            assert refused, "no command was refused"
            assert all(type(r) is errors.TooManyRequestsError for r in refused)
            assert all(r.code == 27 for r in refused)  # type: ignore[attr-defined]
            assert len(results) - len(refused) <= MAX_COMMANDS_PER_S

    run(scenario())


@pytest.mark.parametrize(
    ("fault", "code", "cls"),
    [
        ("channel_error", 10, errors.ChannelError),
        ("buffer_overflow", 25, errors.SubscriptionBufferOverflowError),
    ],
)
def test_terminal_error_arrives_through_recv_and_drops_the_sid(
    sim: SimulatorProcess,
    settings: KalshiSettings,
    fault: str,
    code: int,
    cls: type[SubscriptionError],
) -> None:
    async def scenario() -> None:
        async with connect(settings) as ws:
            await ws.subscribe(["ticker"])
            await ws.subscribe(["market_lifecycle_v2"])
            assert ws.subscriptions == {1: "ticker", 2: "market_lifecycle_v2"}
            await asyncio.to_thread(sim.set_faults, **{fault: True})

            message, _ = await next_message(ws, lambda m: isinstance(m, ErrorMessage), 10)
            assert isinstance(message, ErrorMessage)
            assert (message.code, message.sid) == (code, 1)
            exc = message.to_exception()
            assert type(exc) is cls
            assert exc.terminal is True
            assert exc.sid == 1
            assert 1 not in ws.subscriptions
            assert ws.subscriptions == {2: "market_lifecycle_v2"}
            assert await ws.list_subscriptions() == [
                SubscriptionInfo(channel="market_lifecycle_v2", sid=2)
            ]

    run(scenario())


# --------------------------------------------------------------------------- ticker_v2


def test_ticker_v2_is_refused_before_anything_is_sent(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    before = len(sim.sessions())

    async def scenario() -> None:
        async with connect(settings) as ws:
            with pytest.raises(RetiredChannelError) as caught:
                await ws.subscribe(["ticker_v2"])
            assert "'ticker'" in str(caught.value)
            assert "February 2026" in str(caught.value)
            with pytest.raises(RetiredChannelError):
                await ws.subscribe(["ticker", "ticker_v2"])  # not even the good half
            # the next command still gets id 1, and the server has seen just that one
            answer = await ws.command("list_subscriptions")
            assert answer == [Ok(cmd_id=1, subscriptions=[])]

    run(scenario())
    record = session_of(sim, before)
    assert record["commands_received"] == 1


def test_simulator_answers_a_raw_ticker_v2_subscribe_with_unknown_channel(
    settings: KalshiSettings,
) -> None:
    async def scenario() -> None:
        async with connect(settings) as ws:
            answer = await ws.command("subscribe", {"channels": ["ticker_v2"]})
            assert len(answer) == 1
            assert isinstance(answer[0], ErrorMessage)
            assert answer[0].code == 8
            assert type(answer[0].to_exception()) is errors.UnknownChannelNameError
            assert ws.subscriptions == {}

    run(scenario())


# --------------------------------------------------------------------------- how a connection ends


def test_silent_socket_ends_recv_with_silence_timeout(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    async def scenario() -> None:
        async with connect(settings, silence_timeout_s=2) as ws:
            await ws.subscribe(["ticker"])
            await next_message(ws, lambda m: isinstance(m, Tick), 10)
            await asyncio.to_thread(sim.set_faults, silence_s=10)
            _, end = await recv_until_end(ws, 8)
            assert isinstance(end, SilenceTimeoutError), end
            assert "no frame and no pong" in str(end)
            assert ws.closed
            with pytest.raises(SilenceTimeoutError):
                await ws.recv()  # every later call raises too
            with pytest.raises(SilenceTimeoutError):
                await ws.list_subscriptions()

    run(scenario())


def test_server_close_ends_recv_after_every_earlier_frame_was_handed_on(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    before = len(sim.sessions())

    async def scenario() -> list[Frame]:
        async with connect(settings) as ws:
            await ws.subscribe(["ticker"])
            _, early = await next_message(ws, lambda m: isinstance(m, Tick), 10)
            await asyncio.to_thread(sim.set_faults, drop_connections=True)
            frames, end = await recv_until_end(ws, 10)
            assert isinstance(end, ConnectionClosedError), end
            assert end.code == 1001
            assert "closed by the server" in str(end)
            assert ws.closed
            return early + frames

    received = run(scenario())
    record, sent = closed_session(sim, before)
    assert len(received) == sent
    assert (
        sum(isinstance(decode_frame(f.data), Tick) for f in received)
        == record["ticker_frames_sent"]
    )


def test_deliver_hands_on_every_frame_in_order_then_raises_the_end(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    """`deliver` (the stream's way of reading) takes over from `recv` without losing or
    reordering a frame: those queued before it was called come first, then the rest as read,
    until the server's close, which it raises."""
    before = len(sim.sessions())

    async def scenario() -> list[bytes]:
        async with connect(settings) as ws:
            await ws.subscribe(["ticker"])
            _, early = await next_message(ws, lambda m: isinstance(m, Tick), 10)
            # frames keep arriving while nobody reads: they wait in the queue
            await asyncio.to_thread(
                wait_for, lambda: ws.pending >= 5, timeout=10, what="five frames queued"
            )
            got: list[tuple[bytes, int]] = []
            dropped = False

            def sink(data: bytes, received_ns: int) -> None:
                nonlocal dropped
                got.append((data, received_ns))
                if len(got) == 50 and not dropped:
                    dropped = True
                    asyncio.get_running_loop().run_in_executor(
                        None, lambda: sim.set_faults(drop_connections=True)
                    )

            with pytest.raises(ConnectionClosedError) as end:
                await asyncio.wait_for(ws.deliver(sink), 30)
            assert end.value.code == 1001 and ws.closed
            times = [ns for _, ns in got]
            assert times == sorted(times) and len(got) >= 50
            return [f.data for f in early] + [data for data, _ in got]

    received = run(scenario())
    record, sent = closed_session(sim, before)
    assert len(received) == sent
    ticks = [decode_frame(d) for d in received if d.startswith(b'{"type":"ticker"')]
    assert len(ticks) == record["ticker_frames_sent"]


@pytest.mark.parametrize("fails", ["sink", "caught_up"])
@pytest.mark.parametrize("queued_first", [True, False], ids=["queued", "read"])
def test_deliver_raises_what_its_sink_raised_and_the_reader_stops(
    settings: KalshiSettings, queued_first: bool, fails: str
) -> None:
    """What the consumer raises, in the sink or in `caught_up` (where the stream hands its
    landing log to the OS), ends the delivery with that error, and the reader stops."""

    async def scenario() -> None:
        async with connect(settings) as ws:
            await ws.subscribe(["ticker"])
            calls = 0
            if queued_first:  # the sink fails on frames read before `deliver` was called
                await asyncio.to_thread(
                    wait_for, lambda: ws.pending >= 5, timeout=10, what="five frames queued"
                )

            def sink(data: bytes, received_ns: int) -> None:
                nonlocal calls
                calls += 1
                if calls == 3 and fails == "sink":
                    raise OSError(28, "No space left on device")

            def caught_up() -> None:
                if calls >= 3 and fails == "caught_up":
                    raise OSError(28, "No space left on device")

            with pytest.raises(OSError, match="No space left"):
                await asyncio.wait_for(ws.deliver(sink, caught_up), 20)
            # the sink: not one frame after the failure; caught_up: at most those of its read
            assert calls == 3 if fails == "sink" else calls >= 3
            # the reader stopped: what it had queued (if the sink failed on those), then the end
            _, end = await recv_until_end(ws, 10)
            assert isinstance(end, ConnectionClosedError), end
            assert "consumer of the frames failed" in str(end)

    run(scenario())


def test_frame_larger_than_max_frame_bytes_ends_with_a_typed_close(
    settings: KalshiSettings,
) -> None:
    async def scenario() -> None:
        ws = connect(settings, max_frame_bytes=200)
        await ws.connect()
        try:
            assert await ws.subscribe(["ticker"]) == [Subscribed(cmd_id=1, channel="ticker", sid=1)]
            frames, end = await recv_until_end(ws, 10)
            assert isinstance(end, ConnectionClosedError), end
            assert "1009" in str(end)  # message too big
            assert all(len(f.data) <= 200 for f in frames)
            assert ws.closed
            with pytest.raises(ConnectionClosedError):
                await ws.list_subscriptions()
        finally:
            await ws.close()

    run(scenario())


def test_recv_after_the_client_closes_reports_a_client_close(settings: KalshiSettings) -> None:
    async def scenario() -> None:
        ws = connect(settings)
        await ws.connect()
        await ws.subscribe(["market_lifecycle_v2"])
        await ws.close()
        _, end = await recv_until_end(ws, 5)
        assert isinstance(end, ConnectionClosedError)
        assert end.code == 1000
        assert "closed by the client" in str(end), str(end)

    run(scenario())


def test_recv_after_close_with_a_full_queue_ends_instead_of_hanging(
    settings: KalshiSettings,
) -> None:
    # a consumer that fell behind (queue full, reader waiting) when the socket is closed must
    # still get the queued frames and then the end, not wait forever
    async def scenario() -> None:
        ws = connect(settings, queue_size=5)
        await ws.connect()
        await ws.subscribe(["ticker"])
        async with asyncio.timeout(10):
            # five queued, the sixth waiting for room (the client offers no event to await)
            while ws.frames_received <= 5:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await ws.close()
        assert ws.closed
        handed_on = 0
        with pytest.raises(ConnectionClosedError):
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
                    handed_on += 1
        assert handed_on <= 5

    run(scenario())


def test_malformed_frames_are_yielded_as_errors_and_the_stream_goes_on(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    async def scenario() -> None:
        async with connect(settings) as ws:
            await ws.subscribe(["ticker"])
            await asyncio.to_thread(sim.set_faults, malformed_rate=1.0)
            bad: list[FrameDecodeError] = []
            ticks = 0
            async with asyncio.timeout(20):
                async for item in ws.messages():
                    if isinstance(item, FrameDecodeError):
                        bad.append(item)
                    elif isinstance(item, Tick):
                        ticks += 1
                    if len(bad) >= 5 and ticks >= 5:
                        break
            assert all(e.raw.rstrip(b"\n") for e in bad)
            assert all(isinstance(e.reason, str) and e.reason for e in bad)
            assert not ws.closed
            assert await ws.list_subscriptions() == [SubscriptionInfo(channel="ticker", sid=1)]

    run(scenario())


# --------------------------------------------------------------------------- the ledger


def test_ticks_received_equal_the_ledger_lines_the_simulator_sent(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    before = len(sim.sessions())

    async def scenario() -> list[Tick]:
        async with connect(settings) as ws:
            await ws.subscribe(["ticker"])
            ticks: list[Tick] = []
            async with asyncio.timeout(20):
                while len(ticks) < 200:
                    message = decode_frame((await ws.recv()).data)
                    if isinstance(message, Tick):
                        ticks.append(message)
            # after `unsubscribed` nothing more is sent on sid 1: the count is complete
            unsubscribe = asyncio.create_task(ws.unsubscribe([1]))
            async with asyncio.timeout(20):
                while True:
                    message = decode_frame((await ws.recv()).data)
                    if isinstance(message, Tick):
                        ticks.append(message)
                    elif isinstance(message, Unsubscribed):
                        break
            await unsubscribe
            return ticks

    ticks = run(scenario())
    record = session_of(sim, before)
    indexes = [i for first, last in record["sent_ranges"] for i in range(first, last + 1)]
    assert len(indexes) == len(ticks) == record["ticker_frames_sent"]
    assert sim.ledger_path is not None
    ledger = wait_for(
        lambda: (
            (lines := sim.ledger_path.read_bytes().splitlines())
            and len(lines) > max(indexes)
            and lines
        ),
        timeout=10,
        what="the ledger to be flushed",
    )
    expected = [
        decode_frame(b'{"type":"ticker","sid":1,"msg":' + ledger[i] + b"}") for i in indexes
    ]
    # the ledger keeps the msg as sent; the envelope's sending_ts_ms comes with every frame
    assert all(t.sent_ts_ms is not None and t.sent_ts_ms >= t.exchange_ts_ms for t in ticks)
    assert [msgspec.structs.replace(t, sent_ts_ms=None) for t in ticks] == expected
    assert len({t.market_ticker for t in ticks}) > 20  # all markets, not a few


# --------------------------------------------------------------------------- hourly rollover


@pytest.fixture(scope="module")
def rolling_sim(kalshi_home: Path) -> Iterator[SimulatorProcess]:
    """Hourly markets that live 5 seconds: listed, opened, closed, determined, settled."""
    with SimulatorProcess(
        markets=40, rate=20, seed=3, market_lifetime="5s", kalshi_home=kalshi_home
    ) as sim:
        yield sim


@pytest.mark.timeout(90)
def test_hourly_markets_roll_over_with_lifecycle_messages_and_in_rest(
    rolling_sim: SimulatorProcess,
) -> None:
    settings = KalshiSettings.for_env(
        "local", rest_url=rolling_sim.rest_url, ws_url=rolling_sim.ws_url
    )
    with RestClient(settings) as client:
        open_at_start = {m.ticker for m in client.get_markets(status="open")}

    async def scenario() -> list[Message]:
        messages: list[Message] = []
        async with connect(settings) as ws:
            assert await ws.subscribe(["market_lifecycle_v2"]) == [
                Subscribed(cmd_id=1, channel="market_lifecycle_v2", sid=1)
            ]

            def settled_after_determined() -> bool:
                determined = {
                    m.market_ticker
                    for m in messages
                    if isinstance(m, MarketLifecycle) and m.event_type == "determined"
                }
                return any(
                    isinstance(m, MarketLifecycle)
                    and m.event_type == "settled"
                    and m.market_ticker in determined
                    for m in messages
                ) and any(
                    isinstance(m, MarketLifecycle) and m.event_type == "created" for m in messages
                )

            async with asyncio.timeout(30):
                while not settled_after_determined():
                    messages.append(decode_frame((await ws.recv()).data))
        return messages

    messages = run(scenario())
    lifecycle = [m for m in messages if isinstance(m, MarketLifecycle)]
    created = [m for m in lifecycle if m.event_type == "created"]
    assert created
    assert {m.event_type for m in lifecycle} >= {"created", "determined", "settled"}
    seqs = [m.seq for m in messages if isinstance(m, MarketLifecycle | EventLifecycle)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one counter, no gaps
    for m in created:
        assert m.additional_metadata is not None
        assert m.open_ts is not None and m.close_ts is not None
        assert m.close_ts > m.open_ts
    # As on Kalshi: `determined` carries the result and value, `settled` only its time.
    determined = [m for m in lifecycle if m.event_type == "determined"]
    assert all(m.result in ("yes", "no") for m in determined)
    assert all(m.settlement_value in ("0.0000", "1.0000") for m in determined)
    settled = [m for m in lifecycle if m.event_type == "settled"]
    assert all(m.settled_ts is not None and m.result is None for m in settled)
    new_events = {m.additional_metadata.event_ticker for m in created if m.additional_metadata}
    assert new_events <= {e.event_ticker for e in messages if isinstance(e, EventLifecycle)}

    new_tickers = {m.market_ticker for m in created} - open_at_start
    assert new_tickers, "every created market was already open at the start"

    def newly_open() -> set[str]:
        with RestClient(settings) as client:
            return {m.ticker for m in client.get_markets(status="open")} & new_tickers

    wait_for(
        newly_open,
        timeout=20,
        interval=0.25,
        what="a market created during the test to be open in GET /markets",
    )


def test_deliver_says_when_every_frame_read_so_far_was_taken(settings: KalshiSettings) -> None:
    """`caught_up` (the stream then hands its landing log to the OS, so a killed process loses
    nothing it logged) follows the frames it covers: each call comes after at least one frame,
    and the last frame taken is followed by one, whether it came queued or as read."""

    async def scenario() -> None:
        async with connect(settings) as ws:
            await ws.subscribe(["ticker"])
            await asyncio.to_thread(
                wait_for, lambda: ws.pending >= 5, timeout=10, what="five frames queued"
            )
            events: list[str] = []

            def sink(data: bytes, received_ns: int) -> None:
                events.append("frame")

            def caught_up() -> None:
                events.append("caught_up")

            task = asyncio.create_task(ws.deliver(sink, caught_up))
            await asyncio.to_thread(
                wait_for, lambda: events.count("frame") >= 200, timeout=30, what="200 frames"
            )
            await ws.close()
            with pytest.raises(ConnectionClosedError):
                await task
            assert events[-1] == "caught_up" and events[0] == "frame"
            calls = [i for i, e in enumerate(events) if e == "caught_up"]
            assert all(events[i - 1] == "frame" for i in calls)  # never twice for the same frames
            assert len(calls) >= 2

    run(scenario())

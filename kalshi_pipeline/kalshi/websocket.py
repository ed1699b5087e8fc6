"""One Kalshi WebSocket connection's life: signed handshake, commands, frames, silence watchdog.

The reconnect policy lives with the caller (the stream engine): this class connects once, hands
on every frame as received (bytes plus receive time) through a bounded queue, answers commands by
matching their `id`, tracks sids from `subscribed`, and ends with a typed error when the socket
closes, cleanly or not, or goes silent. It pings on its own and counts pongs as life, because
the server's pings may stop while data flows and a half-open socket sends nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import Frame as WireFrame
from websockets.frames import Opcode

from kalshi_pipeline.kalshi.auth import Signer
from kalshi_pipeline.kalshi.errors import (
    ConnectionClosedError,
    FrameDecodeError,
    KalshiWebSocketError,
    RetiredChannelError,
    SilenceTimeoutError,
    WebSocketAuthError,
    WebSocketHandshakeError,
    auth_hint,
    auth_reason,
    parse_error_body,
)
from kalshi_pipeline.kalshi.messages import (
    ErrorMessage,
    Message,
    Ok,
    Subscribed,
    SubscriptionInfo,
    Unsubscribed,
    decode_frame,
)

log = logging.getLogger(__name__)

RETIRED_CHANNELS = {
    "ticker_v2": (
        "Kalshi retired the ticker_v2 channel in February 2026 (2026-02-12; subscribing now "
        "answers error 8, Unknown channel name); subscribe to 'ticker' instead"
    ),
}
UPDATE_ACTIONS = ("add_markets", "delete_markets", "get_snapshot")
# Kalshi's message limit (it stays 64 MiB as of October 2026): a
# frame, decompressed, up to this size is accepted, so no real message is ever refused.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_TICKER_PREFIX = b'{"type":"ticker"'
# data frames never answer a command nor change a subscription: not decoded by the router
_DATA_PREFIXES = (
    _TICKER_PREFIX,
    b'{"type":"orderbook_delta"',
    b'{"type":"orderbook_snapshot"',
    b'{"type":"trade"',
)
_ENCODER = msgspec.json.Encoder()
_SINK_FAILED = "the consumer of the frames failed"


class _SinkFailed(Exception):
    """`deliver`'s sink raised (and `deliver` raises what it raised): the reader stops."""


class CommandTimeoutError(KalshiWebSocketError):
    """A command got no answer in time (the connection may be fine)."""


_WHOLE = (Opcode.TEXT, Opcode.BINARY)


def _frames_waiting(ws: ClientConnection) -> bool:
    """Whether websockets holds frames not yet read (where it cannot be told, False: the
    consumer is then told it caught up after every frame)."""
    return bool(ws.queued) if isinstance(ws, _CountingConnection) and ws.can_direct else False


class _CountingConnection(ClientConnection):
    """Counts the bytes that arrive on the socket: with compression, what the wire carried.

    And while `KalshiWebSocket.deliver` hands frames to a sink, `direct` takes each whole data
    frame as websockets parses it, in the same callback: no queue, no wake-up of the reading
    task, no second turn of the event loop per read (the order-book firehose stored 116,000
    deltas/s against 103,000 through the reading task, means of five alternating runs; at 200
    frames a second the event loop's turns fell from three a frame to one, but the receiving
    thread's CPU did not move measurably: there it is the wake-up from sleep that costs). Only
    when websockets' own queue is empty, so that the frames keep their order; a fragmented
    message, pings and pongs, and the end of the connection take websockets' own way."""

    wire_bytes = 0
    direct: Callable[[bytes], None] | None = None
    caught_up: Callable[[], None] | None = None  # after a read whose frames all went `direct`
    _taken = False

    @property
    def queued(self) -> Sized:
        """websockets' own queue of frames not yet read (the asyncio `Assembler`'s, as in
        websockets 17); where a version keeps it elsewhere, `can_direct` is False and every
        frame takes websockets' own way, through the reading task."""
        return self.recv_messages.frames.queue  # type: ignore[no-any-return]

    @property
    def can_direct(self) -> bool:
        try:
            return isinstance(self.queued, Sized)
        except AttributeError:
            return False

    def data_received(self, data: bytes) -> None:
        self.wire_bytes += len(data)
        self._taken = False
        super().data_received(data)
        if self._taken and self.caught_up is not None and not self.queued:
            self.caught_up()

    def process_event(self, event: Any) -> None:
        direct = self.direct
        if (
            direct is not None
            and isinstance(event, WireFrame)
            and event.fin
            and event.opcode in _WHOLE
            and not self.queued
        ):
            data = event.data
            self._taken = True
            direct(data if type(data) is bytes else bytes(data))
            return
        super().process_event(event)


@dataclass(frozen=True, slots=True)
class Frame:
    """One text frame exactly as received, and when (epoch ns)."""

    data: bytes
    received_ns: int


class _End:
    __slots__ = ("error",)

    def __init__(self, error: KalshiWebSocketError) -> None:
        self.error = error


class _Pending:
    __slots__ = ("expected", "future", "responses")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.responses: list[Message] = []
        self.future: asyncio.Future[list[Message]] = asyncio.get_running_loop().create_future()


class KalshiWebSocket:
    """A single signed connection. Use `connect()`, then `recv()` in one task; commands from any."""

    def __init__(
        self,
        url: str,
        signer: Signer,
        *,
        max_frame_bytes: int = MAX_MESSAGE_BYTES,
        compression: bool = False,
        silence_timeout_s: float = 30.0,
        ping_interval_s: float | None = None,
        open_timeout_s: float = 10.0,
        command_timeout_s: float = 10.0,
        queue_size: int = 10_000,
    ) -> None:
        if silence_timeout_s <= 0:
            raise ValueError(f"silence_timeout_s={silence_timeout_s} must be positive")
        self.url = url
        self._signer = signer
        self.max_frame_bytes = max_frame_bytes
        self.compression = compression
        self.silence_timeout_s = silence_timeout_s
        self.ping_interval_s = ping_interval_s or max(0.5, min(10.0, silence_timeout_s / 3))
        self.open_timeout_s = open_timeout_s
        self.command_timeout_s = command_timeout_s
        self.subscriptions: dict[int, str] = {}  # sid -> channel, from `subscribed`
        self.last_activity = time.monotonic()
        self.frames_received = 0
        self.bytes_received = 0  # frame payloads, decompressed
        self._ws: ClientConnection | None = None
        self._queue: asyncio.Queue[Frame | _End] = asyncio.Queue(queue_size)
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._end: KalshiWebSocketError | None = None
        self._reader_blocked = False
        self._reader_done = False
        # `deliver`'s sink: frames are handed to it as they are parsed, not queued
        self._sink: Callable[[bytes, int], None] | None = None
        self._caught_up: Callable[[], None] | None = None
        self._delivered: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ life

    async def connect(self) -> None:
        """Open the socket with a fresh signature. Raises WebSocketAuthError on 401."""
        headers = self._signer.headers("GET", self.url)
        try:
            self._ws = await connect(
                self.url,
                additional_headers=headers,
                max_size=self.max_frame_bytes,
                ping_interval=None,  # our watchdog pings, so that pongs count as life
                open_timeout=self.open_timeout_s,
                close_timeout=2,
                # permessage-deflate, offered only when asked for: Kalshi negotiates it when
                # offered (since 2026-09-24); the setting's default is chosen by measurement
                compression="deflate" if self.compression else None,
                create_connection=_CountingConnection,
                max_queue=4096,  # frames buffered by websockets; 16 makes it re-arm reads often
                user_agent_header="kalshi-pipeline/0.1",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body or b""
            if status in (401, 403):
                code, _message, details = parse_error_body(body)
                reason = auth_reason(code, details)
                raise WebSocketAuthError(
                    f"WebSocket handshake to {self.url} answered HTTP {status} "
                    f"{body.decode('utf-8', 'replace').strip()}; "
                    + auth_hint(
                        reason,
                        getattr(self._signer, "key_id", None),
                        getattr(self._signer, "key_file", None),
                    ),
                    status=status,
                    body=body,
                    reason=reason,
                ) from None
            raise WebSocketHandshakeError(
                f"WebSocket handshake to {self.url} answered HTTP {status}: "
                f"{body[:200].decode('utf-8', 'replace').strip()}",
                status=status,
                body=body,
            ) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise WebSocketHandshakeError(
                f"cannot open WebSocket {self.url}: {type(exc).__name__}: {exc}"
            ) from None
        self.last_activity = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._read(), name="kalshi-ws-reader"),
            asyncio.create_task(self._watch(), name="kalshi-ws-watchdog"),
        ]

    async def close(self) -> None:
        """Close (politely if the server answers within 2 s) and stop the helper tasks."""
        if self._end is None:
            self._end = ConnectionClosedError("closed by the client", code=1000)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._finish(self._end or ConnectionClosedError("closed by the client", code=1000))

    async def __aenter__(self) -> KalshiWebSocket:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._end is not None

    @property
    def wire_bytes(self) -> int:
        """Bytes received on the socket so far (frames as sent, compressed or not)."""
        return self._ws.wire_bytes if isinstance(self._ws, _CountingConnection) else 0

    @property
    def compressed(self) -> bool:
        """Whether the server agreed to permessage-deflate on this connection."""
        if self._ws is None or self._ws.response is None:
            return False
        offered = self._ws.response.headers.get("Sec-WebSocket-Extensions", "")
        return "permessage-deflate" in offered

    @property
    def pending(self) -> int:
        """Frames received and not yet taken by `recv()`."""
        return self._queue.qsize()

    # ------------------------------------------------------------------ frames

    async def recv(self) -> Frame:
        """The next frame; raises the connection's end (closed, silent) once all are handed on."""
        if self._queue.empty() and self._reader_done and self._end is not None:
            raise self._end
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later call raises too
            raise item.error
        return item

    async def frames(self) -> AsyncIterator[Frame]:
        """Every frame until the connection ends; the end is raised, not swallowed."""
        while True:
            yield await self.recv()

    async def messages(self) -> AsyncIterator[Message | FrameDecodeError]:
        """Decoded messages; undecodable frames are yielded as their error, never raised."""
        async for frame in self.frames():
            try:
                yield decode_frame(frame.data)
            except FrameDecodeError as exc:
                yield exc

    async def deliver(
        self,
        sink: Callable[[bytes, int], None],
        caught_up: Callable[[], None] | None = None,
    ) -> None:
        """Hand every frame (its bytes and receive time, epoch ns) to `sink`, in order, until the
        connection ends; then raise its end, as `recv` does, or what `sink` raised. `caught_up`
        is called whenever every frame read so far has been handed over (after each read of the
        socket, at most; a failure there counts as the sink's).

        The frames are handed over as they are parsed, in websockets' own callback (or the
        reader's task, for frames read before): no queue and no task switch per frame (at the
        firehose's rates, `recv`'s queue was a tenth of the receiving thread's time). `sink`
        must not block; command answers still reach their callers, as with `recv`."""
        self._delivered = asyncio.get_running_loop().create_future()
        while not self._queue.empty():  # read before we were asked, in order
            item = self._queue.get_nowait()
            if isinstance(item, _End):
                self._queue.put_nowait(item)
                raise item.error
            try:
                sink(item.data, item.received_ns)
                if caught_up is not None and self._queue.empty():
                    caught_up()
            except Exception:
                # as when it fails in the reader: the reading stops, the end says why
                self._end = self._end or ConnectionClosedError(_SINK_FAILED)
                if self._tasks:
                    self._tasks[0].cancel()  # the reader
                raise
        if self._reader_done and self._end is not None:
            raise self._end
        self._sink = sink
        self._caught_up = caught_up
        ws = self._ws if isinstance(self._ws, _CountingConnection) and self._ws.can_direct else None
        if ws is not None:
            ws.direct = self._direct
            ws.caught_up = self._direct_caught_up if caught_up is not None else None
        try:
            await self._delivered
        finally:
            self._sink = None
            self._caught_up = None
            if ws is not None:
                ws.direct = None
                ws.caught_up = None

    def _direct_caught_up(self) -> None:
        caught_up = self._caught_up
        if caught_up is None:
            return
        try:
            caught_up()
        except Exception as exc:  # as the sink's own failure
            self._direct_failed(exc)

    def _direct(self, data: bytes) -> None:
        """One whole frame from websockets' parser (`_CountingConnection.direct`), handled as
        `_read` handles a frame; a failure ends the reading as it would there."""
        now = self._arrived(data)
        try:
            if not data.startswith(_DATA_PREFIXES):
                self._route(data)
        except Exception as exc:  # a bug in routing must not hang the consumer
            self._stop_reading(
                ConnectionClosedError(f"WebSocket reader failed: {type(exc).__name__}: {exc}")
            )
            return
        sink = self._sink
        if sink is None:  # not expected (`direct` is cleared with the sink): never drop a frame
            self._queue.put_nowait(Frame(data, now))
            return
        try:
            sink(data, now)
        except Exception as exc:  # the consumer's failure, raised by `deliver`
            self._direct_failed(exc)

    def _direct_failed(self, exc: Exception) -> None:
        """The sink or `caught_up`, called from websockets' callback, raised: `deliver` raises
        it and the reading ends."""
        self._consumer_failed(exc)
        self._stop_reading(ConnectionClosedError(_SINK_FAILED))

    def _arrived(self, data: bytes) -> int:
        """Count a frame read (either way) as life; its receive time, epoch ns."""
        self.last_activity = time.monotonic()
        self.frames_received += 1
        self.bytes_received += len(data)
        return time.time_ns()

    def _consumer_failed(self, exc: Exception) -> None:
        """`deliver` raises what the sink or `caught_up` raised."""
        if self._delivered is not None and not self._delivered.done():
            self._delivered.set_exception(exc)

    def _stop_reading(self, error: KalshiWebSocketError) -> None:
        """End the reading from outside the reader's task: no frame is handed on after this one,
        and the reader ends with `error`, as if it had failed itself."""
        self._sink = None
        self._caught_up = None
        if isinstance(self._ws, _CountingConnection):
            self._ws.direct = None
            self._ws.caught_up = None
        self._end = self._end or error
        if self._tasks:
            self._tasks[0].cancel()  # the reader: it finishes with `_end`

    def _finish(self, error: KalshiWebSocketError) -> None:
        if self._end is None:
            self._end = error
        delivered = self._delivered
        if delivered is not None and not delivered.done():
            delivered.set_exception(self._end)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(self._end)
        self._pending.clear()

    async def _read(self) -> None:
        assert self._ws is not None
        ws = self._ws
        queue = self._queue
        error: KalshiWebSocketError
        try:
            while True:
                data = await ws.recv(decode=False)
                now = self._arrived(data)
                if not data.startswith(_DATA_PREFIXES):
                    self._route(data)
                sink = self._sink
                if sink is not None:
                    try:
                        sink(data, now)
                        caught_up = self._caught_up
                        if caught_up is not None and not _frames_waiting(ws):
                            caught_up()
                    except Exception as exc:  # the consumer's failure, raised by `deliver`
                        self._consumer_failed(exc)
                        self._sink = None
                        raise _SinkFailed from exc
                    continue
                frame = Frame(data, now)
                try:
                    queue.put_nowait(frame)
                except asyncio.QueueFull:
                    self._reader_blocked = True
                    await queue.put(frame)
                    self._reader_blocked = False
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            if self._end is not None:  # silence, or our own close: say so, not "the server"
                error = self._end
            else:
                error = ConnectionClosedError(
                    f"WebSocket closed by {'the server' if rcvd else 'the network'}"
                    f" (code {rcvd.code if rcvd else exc.sent.code if exc.sent else 'none'}"
                    f"{': ' + rcvd.reason if rcvd and rcvd.reason else ''})",
                    code=rcvd.code if rcvd else None,
                    reason=rcvd.reason if rcvd else "",
                )
        except asyncio.CancelledError:
            error = self._end or ConnectionClosedError("closed by the client", code=1000)
            self._finish(error)
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(_End(error))
            raise
        except _SinkFailed:
            error = ConnectionClosedError(_SINK_FAILED)
        except Exception as exc:  # a bug in routing must not hang the consumer
            error = ConnectionClosedError(f"WebSocket reader failed: {type(exc).__name__}: {exc}")
        finally:
            self._reader_done = True
        self._finish(error)
        await queue.put(_End(self._end or error))

    def _route(self, data: bytes) -> None:
        """Match command responses to their callers and track sids; everything stays queued."""
        try:
            message = decode_frame(data)
        except FrameDecodeError:
            return
        if isinstance(message, Subscribed):
            self.subscriptions[message.sid] = message.channel
        elif (isinstance(message, Unsubscribed) and message.sid is not None) or (
            isinstance(message, ErrorMessage)
            and message.sid is not None
            and message.to_exception().terminal
        ):
            self.subscriptions.pop(message.sid, None)
        cmd_id = getattr(message, "cmd_id", None)
        pending = self._pending.get(cmd_id) if cmd_id else None
        if pending is None:
            return
        pending.responses.append(message)
        if len(pending.responses) >= pending.expected or isinstance(message, ErrorMessage):
            self._pending.pop(cmd_id, None)
            if not pending.future.done():
                pending.future.set_result(pending.responses)

    async def _watch(self) -> None:
        assert self._ws is not None
        ws = self._ws
        while True:
            await asyncio.sleep(self.ping_interval_s)
            if self._reader_blocked:  # the consumer is slow, not the server
                self.last_activity = time.monotonic()
            silent = time.monotonic() - self.last_activity
            if silent > self.silence_timeout_s:
                self._end = SilenceTimeoutError(
                    f"no frame and no pong for {silent:.1f}s (limit {self.silence_timeout_s}s) "
                    f"on {self.url}; the socket is treated as dead"
                )
                ws.transport.abort()
                return
            try:
                waiter = await ws.ping()
            except ConnectionClosed:
                return
            waiter.add_done_callback(self._on_pong)

    def _on_pong(self, fut: asyncio.Future[float]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.last_activity = time.monotonic()

    # ------------------------------------------------------------------ commands

    async def command(
        self,
        cmd: str,
        params: dict[str, Any] | None = None,
        *,
        expected: int = 1,
        timeout_s: float | None = None,
    ) -> list[Message]:
        """Send one command and wait for its `expected` responses (or its first error), at most
        `timeout_s` (default `command_timeout_s`)."""
        if self._ws is None:
            raise KalshiWebSocketError("not connected: call connect() first")
        if self._end is not None:
            raise self._end
        cmd_id = next(self._ids)
        pending = _Pending(expected)
        self._pending[cmd_id] = pending
        body: dict[str, Any] = {"id": cmd_id, "cmd": cmd}
        if params is not None:
            body["params"] = params
        try:
            await self._ws.send(_ENCODER.encode(body).decode())
        except ConnectionClosed:
            self._pending.pop(cmd_id, None)
            raise self._end or ConnectionClosedError("WebSocket closed while sending") from None
        timeout = self.command_timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(pending.future, timeout)
        except TimeoutError:
            self._pending.pop(cmd_id, None)
            raise CommandTimeoutError(
                f"no answer to {cmd} (id {cmd_id}) within {timeout}s"
            ) from None

    @staticmethod
    def _raise_errors(responses: list[Message]) -> None:
        for r in responses:
            if isinstance(r, ErrorMessage):
                raise r.to_exception()

    async def subscribe(
        self,
        channels: Sequence[str],
        *,
        market_tickers: Sequence[str] | None = None,
        market_ids: Sequence[str] | None = None,
        send_initial_snapshot: bool = False,
        skip_ticker_ack: bool = False,
        use_yes_price: bool | None = None,
    ) -> list[Subscribed | Ok]:
        """Subscribe; returns one `Subscribed` (new) or `Ok` (repeat) per channel.

        `use_yes_price` (order books only) is sent when given: Kalshi's default is to change, so
        a recorder says which scale its NO levels are on."""
        if isinstance(channels, str):
            channels = [channels]
        for channel in channels:
            if channel in RETIRED_CHANNELS:
                raise RetiredChannelError(RETIRED_CHANNELS[channel])
        params: dict[str, Any] = {"channels": list(channels)}
        if market_tickers is not None:
            params["market_tickers"] = list(market_tickers)
        if market_ids is not None:
            params["market_ids"] = list(market_ids)
        if send_initial_snapshot:
            params["send_initial_snapshot"] = True
        if skip_ticker_ack:
            params["skip_ticker_ack"] = True
        if use_yes_price is not None:
            params["use_yes_price"] = use_yes_price
        responses = await self.command("subscribe", params, expected=len(channels))
        self._raise_errors(responses)
        return [r for r in responses if isinstance(r, Subscribed | Ok)]

    async def update_subscription(
        self,
        sid: int,
        action: str,
        *,
        market_tickers: Sequence[str] | None = None,
        market_ids: Sequence[str] | None = None,
        send_initial_snapshot: bool = False,
    ) -> Ok:
        if action not in UPDATE_ACTIONS:
            raise ValueError(f"action={action!r} must be one of {', '.join(UPDATE_ACTIONS)}")
        params: dict[str, Any] = {"sids": [sid], "action": action}
        if market_tickers is not None:
            params["market_tickers"] = list(market_tickers)
        if market_ids is not None:
            params["market_ids"] = list(market_ids)
        if send_initial_snapshot:
            params["send_initial_snapshot"] = True
        responses = await self.command("update_subscription", params)
        self._raise_errors(responses)
        ok = responses[0]
        if not isinstance(ok, Ok):
            raise KalshiWebSocketError(f"unexpected answer to update_subscription: {ok!r}")
        return ok

    async def get_snapshot(
        self, sid: int, market_tickers: Sequence[str], *, refusal_within_s: float = 2.0
    ) -> None:
        """Ask for fresh `orderbook_snapshot`s of some markets of an order-book sid.

        The snapshots are the answer (they arrive as frames, on the sid's seq counter); whether
        Kalshi also sends an `ok` is not documented, so an `error` within `refusal_within_s`
        raises and silence counts as accepted."""
        params: dict[str, Any] = {
            "sids": [sid],
            "action": "get_snapshot",
            "market_tickers": list(market_tickers),
        }
        try:
            responses = await self.command(
                "update_subscription", params, timeout_s=refusal_within_s
            )
        except CommandTimeoutError:
            return
        self._raise_errors(responses)

    async def add_markets(self, sid: int, market_tickers: Sequence[str]) -> Ok:
        return await self.update_subscription(sid, "add_markets", market_tickers=market_tickers)

    async def delete_markets(self, sid: int, market_tickers: Sequence[str]) -> Ok:
        return await self.update_subscription(sid, "delete_markets", market_tickers=market_tickers)

    async def unsubscribe(self, sids: Sequence[int]) -> list[Unsubscribed]:
        unique = list(dict.fromkeys(sids))
        responses = await self.command("unsubscribe", {"sids": unique}, expected=len(unique))
        self._raise_errors(responses)
        for r in responses:
            if isinstance(r, Unsubscribed) and r.sid is not None:
                self.subscriptions.pop(r.sid, None)
        return [r for r in responses if isinstance(r, Unsubscribed)]

    async def list_subscriptions(self) -> list[SubscriptionInfo]:
        responses = await self.command("list_subscriptions")
        self._raise_errors(responses)
        ok = responses[0]
        if not isinstance(ok, Ok) or ok.subscriptions is None:
            raise KalshiWebSocketError(f"unexpected answer to list_subscriptions: {ok!r}")
        return ok.subscriptions


__all__ = ["RETIRED_CHANNELS", "CommandTimeoutError", "Frame", "KalshiWebSocket", "websockets"]

"""WebSocket sessions at `/trade-api/ws/v2`: the signed handshake, commands, and one writer task
per connection that owns every byte sent on it (frames, pings, pongs, the close).

As on Kalshi, permessage-deflate is negotiated when the client offers it (and only then), and
commands are accepted in text and binary frames alike.

Outgoing messages wait in a per-connection queue. Ticker and other data frames count against
`send_buffer_bytes`; a reader too slow to keep it below that loses its data subscriptions with
error 25. Pings and pongs are sent by the writer too (aiohttp's autoping is off) so the silence
fault can suppress them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from kalshi_pipeline.simulator.auth import AuthFailure
from kalshi_pipeline.simulator.firehose import SID1_PREFIX, Firehose, ws_text_header
from kalshi_pipeline.simulator.hub import (
    MARKET_LIFECYCLE,
    MVE_LIFECYCLE,
    ORDERBOOK,
    SEQUENCED,
    TICKER,
    TRADE,
    Subscription,
    frame_tail,
    now_ms,
)
from kalshi_pipeline.simulator.malformed import malformed_frame
from kalshi_pipeline.simulator.protocol import (
    ERROR_TEXT,
    NOT_SIMULATED_CHANNELS,
    PRIVATE_CHANNELS,
    Command,
    CommandError,
    MarketSelection,
    action_of,
    channels_of,
    flag,
    market_selection,
    parse_command,
    sids_of,
    single_sid,
)
from kalshi_pipeline.simulator.runtime import Runtime
from kalshi_pipeline.simulator.wire import dumps

log = logging.getLogger(__name__)
WS_PATH = "/trade-api/ws/v2"
MAX_CLIENT_FRAME = 16 * 1024 * 1024
FIREHOSE_CHUNK = 512

K_TICKER, K_DATA, K_CTRL, K_SNAPSHOT, K_PING, K_PONG, K_FIREHOSE, K_CLOSE = range(8)
K_BOOK_FIREHOSE = 8
_COUNTED = (K_TICKER, K_DATA)
HEARTBEAT = b"heartbeat"
DATA_CHANNELS = (TICKER, TRADE, ORDERBOOK, MARKET_LIFECYCLE, MVE_LIFECYCLE)
SERVICE_UNAVAILABLE = (
    b'{"error":{"code":"service_unavailable","message":"service unavailable",'
    b'"details":"simulated handshake refusal"}}'
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _record(ranges: list[list[int]], first: int, last: int) -> None:
    """Append the run first..last to a list of inclusive [first, last] runs, merging neighbours."""
    if ranges and ranges[-1][1] == first - 1:
        ranges[-1][1] = last
    else:
        ranges.append([first, last])


@dataclass
class SessionStats:
    """What `/_sim/sessions` reports for one connection, kept after it closes."""

    conn_id: int
    key_id: str
    remote: str | None
    opened_at_ms: int
    closed_at_ms: int | None = None
    close_code: int | None = None
    ticker_frames_sent: int = 0
    snapshot_frames_sent: int = 0
    data_frames_sent: int = 0
    control_frames_sent: int = 0
    malformed_sent: int = 0
    pings_sent: int = 0
    pongs_sent: int = 0
    pongs_received: int = 0
    commands_received: int = 0
    frames_dropped_silenced: int = 0
    book_firehose_frames_sent: int = 0
    sent_ranges: list[list[int]] = field(default_factory=list)
    """Ledger indexes of live ticker updates (and firehose frames) written to this socket."""
    snapshot_ranges: list[list[int]] = field(default_factory=list)
    """Ledger indexes of the ticker msgs re-sent as `send_initial_snapshot` frames."""

    def to_json(self) -> dict[str, Any]:
        return {
            "conn_id": self.conn_id,
            "key_id": self.key_id,
            "remote": self.remote,
            "opened_at_ms": self.opened_at_ms,
            "closed_at_ms": self.closed_at_ms,
            "close_code": self.close_code,
            "ticker_frames_sent": self.ticker_frames_sent,
            "snapshot_frames_sent": self.snapshot_frames_sent,
            "data_frames_sent": self.data_frames_sent,
            "control_frames_sent": self.control_frames_sent,
            "malformed_sent": self.malformed_sent,
            "pings_sent": self.pings_sent,
            "pongs_sent": self.pongs_sent,
            "pongs_received": self.pongs_received,
            "commands_received": self.commands_received,
            "frames_dropped_silenced": self.frames_dropped_silenced,
            "book_firehose_frames_sent": self.book_firehose_frames_sent,
            "sent_ranges": self.sent_ranges,
            "snapshot_ranges": self.snapshot_ranges,
        }


class Session:
    """One accepted WebSocket connection."""

    def __init__(
        self,
        rt: Runtime,
        ws: web.WebSocketResponse,
        stats: SessionStats,
        stream: AbstractStreamWriter | None = None,
    ) -> None:
        self.rt = rt
        self.ws = ws
        self.stream = stream
        """The connection's payload writer, for the firehose's batched raw writes."""
        self.stats = stats
        self.opened_mono = time.monotonic()
        self.subs: dict[int, Subscription] = {}
        self.by_channel: dict[str, Subscription] = {}
        self.next_sid = 1
        self._firehose_after: list[int] = []  # ticker sids of the command being answered
        self._book_firehose_base: dict[int, int] = {}
        """Order-book sids given the order-book firehose, each with the seq before its first
        frame (its seqs are reserved when it is queued)."""
        self._book_firehose_due: list[int] = []  # order-book sids of the command being answered
        self.queue: deque[tuple[int, bytes, int]] = deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.overflowed = False
        self.closing = False
        self.command_times: deque[float] = deque()
        self._ping_timer: asyncio.TimerHandle | None = None

    # Outlet for the hub.

    @property
    def conn_id(self) -> int:
        return self.stats.conn_id

    def send_ticker(self, frame: bytes, index: int) -> None:
        self._push_counted(K_TICKER, frame, index)

    def send_data(self, frame: bytes) -> None:
        self._push_counted(K_DATA, frame, -1)

    def _push_counted(self, kind: int, frame: bytes, index: int) -> None:
        if self.overflowed or self.closing:
            return
        self.queued_bytes += len(frame)
        if self.queued_bytes > self.rt.config.send_buffer_bytes:
            # The hub is iterating its subscription sets: tear down after this publish.
            self.overflowed = True
            asyncio.get_running_loop().call_soon(self._overflow)
        self.queue.append((kind, frame, index))
        self.wake.set()

    def _push(self, kind: int, frame: bytes = b"", index: int = -1) -> None:
        if self.closing and kind != K_CLOSE:
            return
        self.queue.append((kind, frame, index))
        self.wake.set()

    def reply(self, body: dict[str, Any]) -> None:
        self._push(K_CTRL, dumps(body) + b"\n")

    def error(self, code: int, cid: int = 0, sid: int | None = None) -> None:
        body: dict[str, Any] = {"type": "error"}
        if cid:
            body["id"] = cid
        if sid is not None:
            body["sid"] = sid
        body["msg"] = {"code": code, "msg": ERROR_TEXT[code]}
        self.reply(body)

    # Terminal subscription errors.

    def _overflow(self) -> None:
        """Error 25 for real: drop queued data and every data subscription."""
        kept = [item for item in self.queue if item[0] not in _COUNTED]
        self.queue.clear()
        self.queue.extend(kept)
        self.queued_bytes = 0
        self.terminate(25, channels=DATA_CHANNELS)
        self.overflowed = False

    def terminate(self, code: int, channels: tuple[str, ...] = (TICKER,)) -> int:
        """Send terminal error `code` (10 or 25) on each matching subscription and remove it."""
        n = 0
        for sid, sub in sorted(self.subs.items()):
            if sub.channel in channels:
                self._remove(sub)
                self.error(code, 0, sid)
                n += 1
        return n

    def subscription_error(self, channel: str, code: int) -> int:
        """Error `code` unasked (no `id`) on each subscription of `channel`, with its sid and, on
        a sequenced channel, the next seq; the subscription stays. Returns how many."""
        n = 0
        for sid, sub in sorted(self.subs.items()):
            if sub.channel != channel:
                continue
            body: dict[str, Any] = {"type": "error", "sid": sid}
            if sub.channel in SEQUENCED:
                body["seq"] = sub.next_seq()
            body["msg"] = {"code": code, "msg": ERROR_TEXT[code]}
            self.reply(body)
            n += 1
        return n

    def _remove(self, sub: Subscription) -> None:
        self.subs.pop(sub.sid, None)
        if self.by_channel.get(sub.channel) is sub:
            del self.by_channel[sub.channel]
        self.rt.hub.remove(sub)

    def drop(self) -> None:
        """Close after everything already queued (the drop fault and shutdown)."""
        if not self.closing:
            self._push(K_CLOSE)
            self.closing = True

    # Pings.

    def start_pings(self) -> None:
        interval = self.rt.config.ping_interval_s
        if interval > 0:
            loop = asyncio.get_running_loop()
            self._ping_timer = loop.call_later(interval, self._ping_due)

    def _ping_due(self) -> None:
        self._push(K_PING)
        self.start_pings()

    # Writer.

    async def run_writer(self) -> None:
        ws = self.ws
        faults = self.rt.faults
        counters = self.rt.counters
        stats = self.stats
        queue = self.queue
        try:
            while True:
                while not queue:
                    self.wake.clear()
                    await self.wake.wait()
                kind, payload, index = queue.popleft()
                if kind in _COUNTED:
                    self.queued_bytes -= len(payload)
                if kind == K_CLOSE:
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"simulator drop")
                    return
                if faults.silenced(self.opened_mono):
                    stats.frames_dropped_silenced += 1
                    continue
                if kind == K_TICKER:
                    await ws.send_frame(payload, WSMsgType.TEXT)
                    self._count_ticker(index, index)
                    if faults.malformed_now():
                        await self._send_malformed(payload)
                elif kind == K_DATA:
                    await ws.send_frame(payload, WSMsgType.TEXT)
                    stats.data_frames_sent += 1
                    counters.data_frames_sent += 1
                elif kind == K_CTRL:
                    await ws.send_frame(payload, WSMsgType.TEXT)
                    stats.control_frames_sent += 1
                    counters.control_frames_sent += 1
                elif kind == K_SNAPSHOT:
                    await ws.send_frame(payload, WSMsgType.TEXT)
                    stats.snapshot_frames_sent += 1
                    counters.snapshot_frames_sent += 1
                    _record(stats.snapshot_ranges, index, index)
                elif kind == K_PING:
                    await ws.ping(HEARTBEAT)
                    stats.pings_sent += 1
                    counters.pings_sent += 1
                elif kind == K_PONG:
                    await ws.pong(payload)
                    stats.pongs_sent += 1
                elif kind == K_FIREHOSE:
                    await self._send_firehose(index)
                elif kind == K_BOOK_FIREHOSE:
                    await self._send_book_firehose(index)
        except (ConnectionError, asyncio.CancelledError):
            return
        except Exception:
            # A bug here must not leave a socket open and silent: say so, and close it.
            log.exception("writer of connection %d failed", self.stats.conn_id)
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.INTERNAL_ERROR)

    async def _send_malformed(self, real: bytes) -> None:
        await self.ws.send_frame(malformed_frame(self.rt.faults.rng, real), WSMsgType.TEXT)
        self.stats.malformed_sent += 1
        self.rt.counters.malformed_sent += 1

    async def _send_firehose(self, sid: int) -> None:
        """The pre-encoded frames, as fast as the socket takes them (send_frame awaits drain).

        Stops early if the subscription goes or the connection is being dropped."""
        sub = self.subs.get(sid)
        fh: Firehose = self.rt.firehose
        if sub is None or not len(fh):
            return
        faults = self.rt.faults
        stats = self.stats
        n = len(fh)
        for start in range(0, n, FIREHOSE_CHUNK):
            if not sub.active or self.closing:
                return
            stop = min(start + FIREHOSE_CHUNK, n)
            if faults.silenced(self.opened_mono):
                stats.frames_dropped_silenced += stop - start
            elif sub.all_markets and faults.malformed_rate == 0.0:
                await self._firehose_run(sub, start, stop)
            else:
                for i in range(start, stop):
                    if sub.covers(fh.tickers[i]):
                        frame = fh.frame_for(i, sub.prefix, now_ms())
                        await self.ws.send_frame(frame, WSMsgType.TEXT)
                        self._count_ticker(fh.first_index + i, fh.first_index + i)
                        if faults.malformed_now():
                            await self._send_malformed(frame)

    async def _firehose_run(self, sub: Subscription, start: int, stop: int) -> None:
        """Frames start..stop-1 back to back: the hot loop of the benchmarks.

        For sid 1 on an uncompressed connection the pre-built frames go to the transport in one
        write per chunk, then the writer waits for the socket to drain; every byte on this socket
        is written by this task, so nothing can interleave. A connection that negotiated
        permessage-deflate gets every frame compressed through aiohttp instead."""
        fh = self.rt.firehose
        transport = self.stream.transport if self.stream is not None else None
        if sub.prefix == SID1_PREFIX and transport is not None and not self.ws.compress:
            if transport.is_closing() or self.ws.closed:
                raise ConnectionResetError("connection closing")
            transport.write(fh.stamp(b"".join(fh.raw[start:stop]), now_ms()))
            self._count_ticker(fh.first_index + start, fh.first_index + stop - 1)
            assert self.stream is not None
            await self.stream.drain()
            return
        send = self.ws.send_frame
        text = WSMsgType.TEXT
        sent = 0
        sending = now_ms()
        try:
            for i in range(start, stop):
                await send(fh.frame_for(i, sub.prefix, sending), text)
                sent += 1
        finally:
            if sent:
                self._count_ticker(fh.first_index + start, fh.first_index + start + sent - 1)

    async def _send_book_firehose(self, sid: int) -> None:
        """The order-book firehose on `sid`, numbered from the seqs reserved for it, as fast as
        the socket takes them: on an uncompressed connection a chunk of whole frames goes to the
        transport in one write, then the writer waits for it to drain (this task writes every
        byte of the socket, so nothing interleaves); with permessage-deflate each frame goes
        through aiohttp's compressor. Every frame is sent even if the subscription drops some
        of the firehose's markets meanwhile (they were queued before that, as live frames
        are); it stops if the subscription goes or the connection is being dropped. The
        drop, reorder and malformed faults leave it alone; a silenced connection loses it."""
        sub = self.subs.get(sid)
        base = self._book_firehose_base.get(sid)
        if sub is None or base is None:
            return
        msgs = self.rt.book_firehose.msgs_for(sub.use_yes_price)
        faults = self.rt.faults
        stats = self.stats
        prefix = b'{"type":"orderbook_delta","sid":%d,"seq":' % sid
        transport = self.stream.transport if self.stream is not None else None
        raw = transport is not None and not self.ws.compress
        send = self.ws.send_frame
        text = WSMsgType.TEXT
        n = len(msgs)
        for start in range(0, n, FIREHOSE_CHUNK):
            if not sub.active or self.closing:
                return
            stop = min(start + FIREHOSE_CHUNK, n)
            if faults.silenced(self.opened_mono):
                stats.frames_dropped_silenced += stop - start
                continue
            sending = now_ms()
            frames = [
                b'%s%d,"msg":%s,"sending_ts_ms":%d}\n' % (prefix, base + 1 + i, msgs[i], sending)
                for i in range(start, stop)
            ]
            if raw:
                assert transport is not None and self.stream is not None
                if transport.is_closing() or self.ws.closed:
                    raise ConnectionResetError("connection closing")
                transport.write(b"".join(ws_text_header(len(f)) + f for f in frames))
                self._count_book_firehose(len(frames))
                await self.stream.drain()
            else:
                for frame in frames:
                    await send(frame, text)
                    self._count_book_firehose(1)

    def _count_book_firehose(self, n: int) -> None:
        self.stats.book_firehose_frames_sent += n
        self.rt.counters.book_firehose_frames_sent += n

    def _count_ticker(self, first: int, last: int) -> None:
        n = last - first + 1
        self.stats.ticker_frames_sent += n
        self.rt.counters.ticker_frames_sent += n
        _record(self.stats.sent_ranges, first, last)

    # Reader and commands.

    def on_ping(self, payload: bytes) -> None:
        if not self.rt.faults.silenced(self.opened_mono):
            self._push(K_PONG, payload)

    def handle_command(self, text: str | bytes) -> None:
        """One command frame, text or binary (binary payloads are read as UTF-8 JSON)."""
        self.stats.commands_received += 1
        now = time.monotonic()
        window = self.command_times
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self.rt.config.max_commands_per_s:
            self.error(27, _readable_id(text))
            return
        window.append(now)
        try:
            cmd = parse_command(text)
        except CommandError as err:
            self.error(err.code, err.command_id, err.sid)
            return
        try:
            if cmd.cmd == "subscribe":
                self._subscribe(cmd)
            elif cmd.cmd == "unsubscribe":
                self._unsubscribe(cmd)
            elif cmd.cmd == "update_subscription":
                self._update(cmd)
            else:
                self._list(cmd)
        except CommandError as err:
            self.error(err.code, cmd.id, err.sid)
        # the order-book firehose follows the whole answer, as data follows a reply
        for sid in self._book_firehose_due:
            self._push(K_BOOK_FIREHOSE, b"", sid)
        self._book_firehose_due.clear()

    def _subscribe(self, cmd: Command) -> None:
        p = cmd.params
        if p is None:
            raise CommandError(2)
        channels = channels_of(p)
        sel = market_selection(p)
        snapshot = flag(p, "send_initial_snapshot")
        skip_ack = flag(p, "skip_ticker_ack")
        if len(sel) > self.rt.config.max_markets_per_subscription:
            raise CommandError(26)
        self._firehose_after.clear()
        for channel in channels:
            try:
                if channel in (TICKER, TRADE):
                    if channel == TRADE and sel.ids:
                        raise CommandError(11)
                    self._subscribe_markets(cmd.id, channel, sel, snapshot, skip_ack)
                elif channel in (MARKET_LIFECYCLE, MVE_LIFECYCLE):
                    self._subscribe_lifecycle(cmd.id, channel)
                elif channel == ORDERBOOK:
                    self._subscribe_book(cmd.id, sel, flag(p, "use_yes_price"), skip_ack)
                elif channel in PRIVATE_CHANNELS:
                    raise CommandError(9)
                elif channel in NOT_SIMULATED_CHANNELS:
                    raise CommandError(8)
                else:
                    raise CommandError(8)
            except CommandError as err:
                self.error(err.code, cmd.id, err.sid)
        # the firehose follows every answer to this command, as data follows a whole reply
        for sid in self._firehose_after:
            self._push(K_FIREHOSE, b"", sid)

    def _resolve(self, sel: MarketSelection) -> list[str]:
        """Tickers named directly plus those of known market ids (unknown ids match nothing)."""
        tickers = list(sel.tickers)
        by_id = self.rt.exchange.markets_by_id
        for mid in sel.ids:
            m = by_id.get(mid)
            if m is not None:
                tickers.append(m.ticker)
        return list(dict.fromkeys(tickers))

    def _subscribe_markets(
        self, cid: int, channel: str, sel: MarketSelection, snapshot: bool, skip_ack: bool
    ) -> None:
        hub = self.rt.hub
        tickers = self._resolve(sel)
        sub = self.by_channel.get(channel)
        if sub is None:
            sub = Subscription(self, self.next_sid, channel)
            self.next_sid += 1
            sub.skip_ack = skip_ack
            if sel.named:
                sub.all_markets = False
                sub.tickers = dict.fromkeys(tickers)
                sub.ids = dict.fromkeys(sel.ids)
            self.subs[sub.sid] = sub
            self.by_channel[channel] = sub
            hub.add(sub)
            self._subscribed(cid, sub)
            if channel == TICKER:
                if snapshot and sel.named:
                    self._snapshot(sub, tickers)
                if len(self.rt.firehose):
                    self._firehose_after.append(sub.sid)
            return
        added: list[str] = []
        if not sel.named:
            if not sub.all_markets:
                hub.make_all_markets(sub)
        elif not sub.all_markets:
            added = [t for t in tickers if t not in sub.tickers]
            if len(sub.tickers) + len(added) > self.rt.config.max_markets_per_subscription:
                raise CommandError(26, sub.sid)
            sub.tickers.update(dict.fromkeys(added))
            sub.ids.update(dict.fromkeys(sel.ids))
            hub.add_markets(sub, added)
        self._ok(cid, sub, skip_ack)
        if channel == TICKER and snapshot and added:
            self._snapshot(sub, added)

    def _subscribe_book(
        self, cid: int, sel: MarketSelection, use_yes_price: bool, skip_ack: bool
    ) -> None:
        """`orderbook_delta`: market tickers only (ids are code 11, none code 14); a snapshot per
        new market, numbered from seq 1 on a new sid; a repeat subscribe acks with `ok` (taking
        a seq) and sends snapshots only for the markets it adds (kalshi-protocol.md §3.8)."""
        if sel.ids:
            raise CommandError(11)
        if not sel.tickers:
            raise CommandError(14)
        hub = self.rt.hub
        sub = self.by_channel.get(ORDERBOOK)
        if sub is None:
            sub = Subscription(self, self.next_sid, ORDERBOOK)
            self.next_sid += 1
            sub.skip_ack = skip_ack
            sub.all_markets = False
            sub.use_yes_price = use_yes_price
            sub.tickers = dict.fromkeys(sel.tickers)
            self.subs[sub.sid] = sub
            self.by_channel[ORDERBOOK] = sub
            hub.add(sub)
            self._subscribed(cid, sub)
            self._book_snapshots(sub, sel.tickers)
            self._book_firehose_if_covered(sub)
            return
        added = [t for t in sel.tickers if t not in sub.tickers]
        if len(sub.tickers) + len(added) > self.rt.config.max_markets_per_subscription:
            raise CommandError(26, sub.sid)
        sub.tickers.update(dict.fromkeys(added))
        hub.add_markets(sub, added)
        self._ok(cid, sub, skip_ack)
        self._book_snapshots(sub, added)
        self._book_firehose_if_covered(sub)

    def _book_firehose_if_covered(self, sub: Subscription) -> None:
        """Once an order-book subscription covers every market of the order-book firehose (its
        snapshots queued), the firehose is due on it, once per sid; its seqs are reserved now.
        It is queued after the whole answer to the command."""
        fh = self.rt.book_firehose
        if not len(fh) or sub.sid in self._book_firehose_base:
            return
        if not fh.covered_by(sub.tickers):
            return
        self._book_firehose_base[sub.sid] = sub.seq
        sub.seq += len(fh)
        self._book_firehose_due.append(sub.sid)

    def _book_snapshots(self, sub: Subscription, tickers: list[str]) -> None:
        markets = self.rt.exchange.markets
        for t in tickers:
            self.rt.hub.send_snapshot(sub, t, markets.get(t))

    def _subscribe_lifecycle(self, cid: int, channel: str) -> None:
        sub = self.by_channel.get(channel)
        if sub is not None:
            self._ok(cid, sub, True)
            return
        sub = Subscription(self, self.next_sid, channel)
        self.next_sid += 1
        self.subs[sub.sid] = sub
        self.by_channel[channel] = sub
        self.rt.hub.add(sub)
        self._subscribed(cid, sub)

    def _subscribed(self, cid: int, sub: Subscription) -> None:
        body: dict[str, Any] = {"type": "subscribed"}
        if cid:
            body["id"] = cid
        body["msg"] = {"channel": sub.channel, "sid": sub.sid}
        self.reply(body)

    def _ok(self, cid: int, sub: Subscription, skip_ack: bool) -> None:
        body: dict[str, Any] = {"type": "ok"}
        if cid:
            body["id"] = cid
        body["sid"] = sub.sid
        if sub.channel in SEQUENCED:
            body["seq"] = sub.next_seq()
        if (
            sub.channel in (TICKER, TRADE, ORDERBOOK)
            and not (skip_ack or sub.skip_ack)
            and not sub.all_markets
        ):
            msg: dict[str, Any] = {"market_tickers": list(sub.tickers)}
            if sub.ids:
                msg["market_ids"] = list(sub.ids)
            body["msg"] = msg
        self.reply(body)

    def _snapshot(self, sub: Subscription, tickers: list[str]) -> None:
        markets = self.rt.exchange.markets
        for t in tickers:
            m = markets.get(t)
            if m is not None and m.msg_index >= 0:
                frame = sub.prefix + frame_tail(m.msg, now_ms())
                self._push(K_SNAPSHOT, frame, m.msg_index)

    def _unsubscribe(self, cmd: Command) -> None:
        p = cmd.params
        if p is None:
            raise CommandError(2)
        for sid in sids_of(p):
            sub = self.subs.get(sid)
            if sub is None:
                self.error(7, cmd.id)
                continue
            self._remove(sub)
            body: dict[str, Any] = {"type": "unsubscribed"}
            if cmd.id:
                body["id"] = cmd.id
            body["sid"] = sid
            if sub.channel in SEQUENCED:
                body["seq"] = sub.next_seq()
            self.reply(body)

    def _update(self, cmd: Command) -> None:
        p = cmd.params
        if p is None:
            raise CommandError(2)
        sid = single_sid(p)
        action = action_of(p)
        sub = self.subs.get(sid)
        if sub is None:
            raise CommandError(7, sid)
        if sub.channel == ORDERBOOK:
            self._update_book(cmd, sub, action)
            return
        if action == "get_snapshot" or sub.channel not in (TICKER, TRADE):
            raise CommandError(13, sid)
        sel = market_selection(p)
        if sub.channel == TRADE and sel.ids:
            raise CommandError(11, sid)
        if not sel.named:
            raise CommandError(14, sid)
        snapshot = flag(p, "send_initial_snapshot")
        skip_ack = flag(p, "skip_ticker_ack")
        tickers = self._resolve(sel)
        hub = self.rt.hub
        if action == "add_markets":
            added: list[str] = []
            if not sub.all_markets:
                added = [t for t in tickers if t not in sub.tickers]
                limit = self.rt.config.max_markets_per_subscription
                if len(sub.tickers) + len(added) > limit:
                    raise CommandError(26, sid)
                sub.tickers.update(dict.fromkeys(added))
                sub.ids.update(dict.fromkeys(sel.ids))
                hub.add_markets(sub, added)
            self._ok(cmd.id, sub, skip_ack)
            if sub.channel == TICKER and snapshot and added:
                self._snapshot(sub, added)
        else:
            if sub.all_markets:
                raise CommandError(13, sid)
            gone = [t for t in tickers if t in sub.tickers]
            for t in gone:
                del sub.tickers[t]
            for mid in sel.ids:
                sub.ids.pop(mid, None)
            hub.remove_markets(sub, gone)
            self._ok(cmd.id, sub, skip_ack)

    def _update_book(self, cmd: Command, sub: Subscription, action: str) -> None:
        """`add_markets` (ok, then snapshots of the new markets), `delete_markets` (ok) and
        `get_snapshot` (snapshots only, no ok: the subscription does not change). The notes do
        not say what `get_snapshot` does with tickers the subscription lacks: they are skipped,
        and a request naming none of its markets is code 14."""
        assert cmd.params is not None
        sel = market_selection(cmd.params)
        if sel.ids:
            raise CommandError(11, sub.sid)
        if not sel.tickers:
            raise CommandError(14, sub.sid)
        skip_ack = flag(cmd.params, "skip_ticker_ack")
        hub = self.rt.hub
        if action == "add_markets":
            added = [t for t in sel.tickers if t not in sub.tickers]
            if len(sub.tickers) + len(added) > self.rt.config.max_markets_per_subscription:
                raise CommandError(26, sub.sid)
            sub.tickers.update(dict.fromkeys(added))
            hub.add_markets(sub, added)
            self._ok(cmd.id, sub, skip_ack)
            self._book_snapshots(sub, added)
            self._book_firehose_if_covered(sub)
        elif action == "delete_markets":
            gone = [t for t in sel.tickers if t in sub.tickers]
            for t in gone:
                del sub.tickers[t]
            hub.remove_markets(sub, gone)
            self._ok(cmd.id, sub, skip_ack)
        else:
            wanted = [t for t in sel.tickers if t in sub.tickers]
            if not wanted:
                raise CommandError(14, sub.sid)
            self._book_snapshots(sub, wanted)

    def _list(self, cmd: Command) -> None:
        body: dict[str, Any] = {"type": "ok"}
        if cmd.id:
            body["id"] = cmd.id
        body["msg"] = [{"channel": s.channel, "sid": s.sid} for _, s in sorted(self.subs.items())]
        self.reply(body)

    def close(self, code: int | None) -> None:
        self.closing = True
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        for sub in list(self.subs.values()):
            self._remove(sub)
        self.queue.clear()
        self.queued_bytes = 0
        self.stats.closed_at_ms = _now_ms()
        self.stats.close_code = code


def _readable_id(text: str | bytes) -> int:
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return 0
    cid = body.get("id") if isinstance(body, dict) else None
    return cid if isinstance(cid, int) and not isinstance(cid, bool) else 0


def json_error(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json")


async def handle_ws(request: web.Request) -> web.StreamResponse:
    rt: Runtime = request.app["runtime"]
    if rt.faults.refusing_handshakes():
        rt.counters.handshakes_refused += 1
        return json_error(503, SERVICE_UNAVAILABLE)
    result = rt.keys.verify(request.headers, request.method, request.url.raw_path)
    if isinstance(result, AuthFailure):
        rt.counters.handshakes_unauthorized += 1
        return json_error(401, result.body)
    ws = web.WebSocketResponse(autoping=False, compress=True, max_msg_size=MAX_CLIENT_FRAME)
    if not ws.can_prepare(request).ok:
        return json_error(
            400, b'{"error":{"code":"bad_request","message":"websocket upgrade required"}}'
        )
    stream = await ws.prepare(request)
    rt.counters.handshakes_accepted += 1
    stats = SessionStats(
        conn_id=len(rt.session_stats) + 1,
        key_id=result,
        remote=request.remote,
        opened_at_ms=_now_ms(),
    )
    rt.session_stats.append(stats)
    session = Session(rt, ws, stats, stream)
    rt.sessions[stats.conn_id] = session
    rt.no_sessions.clear()
    writer = asyncio.create_task(session.run_writer())
    session.start_pings()
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                if not rt.faults.silenced(session.opened_mono):
                    session.handle_command(msg.data)
            elif msg.type == WSMsgType.PING:
                session.on_ping(msg.data)
            elif msg.type == WSMsgType.PONG:
                stats.pongs_received += 1
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        rt.sessions.pop(stats.conn_id, None)
        if not rt.sessions:
            rt.no_sessions.set()
        session.close(ws.close_code)
        if not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
    return ws

"""The WebSocket feed: connect, subscribe, hand every frame to the landing log, reconnect forever.

Reconnects use capped exponential backoff with full jitter, reset only after a healthy period;
a clean close counts as a disconnect; each attempt signs afresh and resubscribes the same scope.
It follows `market_lifecycle_v2` so markets that open inside a limited scope are added and
settled ones dropped (`update_subscription`); with scope "all" the ticker subscription has no
market filter and new markets arrive by themselves. Terminal errors (10, 25) resubscribe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from kalshi_pipeline.kalshi.auth import Signer
from kalshi_pipeline.kalshi.errors import (
    ConnectionClosedError,
    FrameDecodeError,
    KalshiError,
    KalshiWebSocketError,
    SilenceTimeoutError,
    SubscriptionError,
    WebSocketAuthError,
    WebSocketHandshakeError,
)
from kalshi_pipeline.kalshi.messages import (
    ErrorMessage,
    EventLifecycle,
    MarketLifecycle,
    decode_frame,
)
from kalshi_pipeline.kalshi.rest import RestClient
from kalshi_pipeline.kalshi.websocket import KalshiWebSocket
from kalshi_pipeline.stream.config import StreamConfig
from kalshi_pipeline.stream.events import FeedEvents
from kalshi_pipeline.stream.landing import Kind, LandingLog, Source
from kalshi_pipeline.stream.stats import EngineStats
from kalshi_pipeline.stream.writer import TICKER_PREFIX, series_of

log = logging.getLogger(__name__)
TICKER = "ticker"
LIFECYCLE = "market_lifecycle_v2"
AUTH_BACKOFF_FLOOR_S = 5.0


class WebSocketFeed:
    """Runs as one asyncio task until `stop()`. Callbacks tell the supervisor how it goes."""

    def __init__(
        self,
        config: StreamConfig,
        signer: Signer,
        landing: LandingLog,
        stats: EngineStats,
        events: FeedEvents,
        *,
        on_up: Callable[[], None] = lambda: None,
        on_failure: Callable[[int, str], None] = lambda n, why: None,
        on_silence: Callable[[], None] = lambda: None,
        on_gap: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.signer = signer
        self.landing = landing
        self.stats = stats
        self.events = events
        self.on_up = on_up
        self.on_failure = on_failure
        self.on_silence = on_silence
        self.on_gap = on_gap
        self._stop = asyncio.Event()
        self._ws: KalshiWebSocket | None = None
        self._sids: dict[str, int] = {}
        self._tickers: set[str] = set()  # markets on the ticker subscription (limited scope)
        self._event_series: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        self._stop.set()
        if self._ws is not None:
            await self._ws.close()

    def backoff(self, attempt: int) -> float:
        cfg = self.config
        return random.uniform(
            0, min(cfg.backoff_cap_s, cfg.backoff_base_s * 2 ** max(0, attempt - 1))
        )

    async def run(self) -> None:
        attempt = 0  # reconnect attempts since the last healthy session (drives the backoff)
        failures = 0  # consecutive attempts that did not get to subscribed (drives fallback)
        while not self._stop.is_set():
            ws = KalshiWebSocket(
                self.config.kalshi.ws_url,
                self.signer,
                silence_timeout_s=self.config.websocket_timeout_s,
                compression=self.config.websocket_compression,
                max_frame_bytes=self.config.websocket_max_message_bytes,
            )
            self._ws = ws
            subscribed_at: float | None = None
            floor = 0.0
            try:
                await ws.connect()
                self.stats.connects += 1
                self.events.emit(
                    "websocket",
                    "connect",
                    f"{self.config.kalshi.ws_url}"
                    + (" (permessage-deflate)" if ws.compressed else ""),
                )
                # data may follow the first channel's answer before the second's arrives: pump
                # from the start, or a full receive queue would hide the answers we wait for
                pump = asyncio.create_task(self._pump(ws), name="kalshi-ws-pump")
                try:
                    await self._subscribe(ws)
                except BaseException:
                    pump.cancel()
                    with contextlib.suppress(asyncio.CancelledError, KalshiError):
                        await pump
                    raise
                subscribed_at = time.monotonic()
                failures = 0
                self.stats.ws_connected = True
                self.on_up()
                await pump
            except WebSocketAuthError as exc:
                floor = AUTH_BACKOFF_FLOOR_S
                self.events.emit("websocket", "auth_failed", f"{exc}"[:1000])
            except WebSocketHandshakeError as exc:
                self.events.emit("websocket", "connect_failed", f"{exc}"[:1000])
            except SilenceTimeoutError as exc:
                self.events.emit("websocket", "silence", str(exc))
                if not self._stop.is_set():
                    self.on_silence()
            except ConnectionClosedError as exc:
                if not self._stop.is_set():
                    self.events.emit("websocket", "disconnect", str(exc))
            except (SubscriptionError, KalshiWebSocketError, KalshiError) as exc:
                self.events.emit("websocket", "subscribe_failed", f"{exc}"[:1000])
            finally:
                was_up = self.stats.ws_connected
                self.stats.ws_connected = False
                await ws.close()
                self._ws = None
                await self._cancel_tasks()
            if self._stop.is_set():
                break
            self.stats.reconnects += 1
            if subscribed_at is None:
                failures += 1
                self.on_failure(failures, self.stats.last_event)
            elif was_up:
                self.on_gap()
            healthy = subscribed_at is not None and (
                time.monotonic() - subscribed_at >= self.config.healthy_after_s
            )
            attempt = 1 if healthy else attempt + 1
            delay = max(floor, self.backoff(attempt))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    # ------------------------------------------------------------------ subscription

    async def _scope_tickers(self) -> list[str]:
        """Markets of a limited scope, from REST (blocking calls run off the loop)."""
        scope = self.config.scope

        def fetch() -> list[str]:
            found: list[str] = list(scope.tickers)
            with RestClient(
                self.config.kalshi, sign=False, requests_per_s=self.config.requests_per_s
            ) as client:
                for series in scope.series:
                    for status in ("open", "unopened"):
                        found += [
                            m.ticker
                            for m in client.get_markets(series_ticker=series, status=status)
                        ]
                for event in scope.events:
                    found += [m.ticker for m in client.get_markets(event_ticker=event)]
            return list(dict.fromkeys(found))

        return await asyncio.to_thread(fetch)

    async def _subscribe(self, ws: KalshiWebSocket) -> None:
        scope = self.config.scope
        if scope.is_all:
            await ws.subscribe([TICKER, LIFECYCLE])
            what = f"{TICKER} (all markets)"
        else:
            self._tickers = set(await self._scope_tickers())
            await ws.subscribe([LIFECYCLE])
            await ws.subscribe([TICKER], market_tickers=sorted(self._tickers))
            what = f"{TICKER} ({scope.describe()}: {len(self._tickers)} markets)"
        self._sids = {channel: sid for sid, channel in ws.subscriptions.items()}
        self.events.emit("websocket", "subscribe", f"{what} and {LIFECYCLE}; sids {self._sids}")

    async def _resubscribe(self, ws: KalshiWebSocket, channel: str, why: str) -> None:
        self.events.emit("websocket", "resubscribe", f"{channel}: {why}")
        if channel == TICKER and not self.config.scope.is_all:
            await ws.subscribe([TICKER], market_tickers=sorted(self._tickers))
        else:
            await ws.subscribe([channel])
        for sid, ch in ws.subscriptions.items():
            self._sids[ch] = sid
        self.on_gap()

    # ------------------------------------------------------------------ frames

    async def _pump(self, ws: KalshiWebSocket) -> None:
        append = self.landing.append
        flush = self.landing.flush
        stats = self.stats
        while True:
            frame = await ws.recv()
            append(Kind.WS_FRAME, Source.WEBSOCKET, frame.data, frame.received_ns)
            stats.ws_frames += 1
            stats.ws_bytes += len(frame.data)
            if not frame.data.startswith(TICKER_PREFIX):
                self._control(ws, frame.data)
            if not ws.pending:  # caught up: hand the buffer to the OS before waiting again
                flush()

    def _spawn(self, coro: object, what: str) -> None:
        async def guarded() -> None:
            try:
                await coro  # type: ignore[misc]
            except (KalshiError, ConnectionClosedError) as exc:
                self.events.emit("websocket", "command_failed", f"{what}: {exc}"[:1000])

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def _control(self, ws: KalshiWebSocket, data: bytes) -> None:
        if self.config.debug:  # WEBSOCKET_DEBUG: every non-ticker frame, as received
            log.debug("frame %s", data[:2000].decode("utf-8", "replace").rstrip())
        try:
            msg = decode_frame(data)
        except FrameDecodeError:
            return  # counted and recorded by the writer, which decodes the log
        if isinstance(msg, ErrorMessage):
            error = msg.to_exception(data)
            channel = next((c for c, s in self._sids.items() if s == msg.sid), None)
            if error.terminal and channel is not None:
                self._spawn(self._resubscribe(ws, channel, str(error)), f"resubscribe {channel}")
            else:
                self.events.emit("websocket", "server_error", str(error)[:1000])
        elif isinstance(msg, EventLifecycle):
            if msg.series_ticker:
                self._event_series[msg.event_ticker] = msg.series_ticker
        elif isinstance(msg, MarketLifecycle) and not self.config.scope.is_all:
            self._follow(ws, msg)

    def _in_scope(self, m: MarketLifecycle) -> bool:
        scope = self.config.scope
        if m.market_ticker in scope.tickers:
            return True
        event = m.additional_metadata.event_ticker if m.additional_metadata else None
        if event and event in scope.events:
            return True
        series = self._event_series.get(event or "") or series_of(event)
        return bool(series and series in scope.series)

    def _follow(self, ws: KalshiWebSocket, m: MarketLifecycle) -> None:
        sid = self._sids.get(TICKER)
        if sid is None:
            return
        if m.event_type == "created" and m.market_ticker not in self._tickers and self._in_scope(m):
            self._tickers.add(m.market_ticker)
            self.events.emit("websocket", "markets_added", m.market_ticker)
            self._spawn(ws.add_markets(sid, [m.market_ticker]), f"add {m.market_ticker}")
        elif m.event_type == "settled" and m.market_ticker in self._tickers:
            self._tickers.discard(m.market_ticker)
            self.events.emit("websocket", "markets_removed", m.market_ticker)
            self._spawn(ws.delete_markets(sid, [m.market_ticker]), f"delete {m.market_ticker}")

"""The WebSocket feed: connect, subscribe, hand every frame to the landing log, reconnect forever.

Reconnects use capped exponential backoff with full jitter, reset only after a healthy period;
a clean close counts as a disconnect; each attempt signs afresh and resubscribes the same scope.
It follows `market_lifecycle_v2` so markets that open inside a limited scope are added and
settled ones dropped (`update_subscription`); with scope "all" the ticker subscription has no
market filter and new markets arrive by themselves. Terminal errors (10, 25) resubscribe; on an
order-book subscription what was lost is recorded as a `sequence_gap` until its markets' fresh
snapshots arrive on the new subscription (`book_resynced` of the old sid); on the trade
subscription, the trades since the last one received are backfilled once it streams again.

The `channels` setting adds `trade` (the scope's markets, or no filter for "all") and
`orderbook_delta`. Order books need market tickers: "all" means the markets open now (REST),
then those `market_lifecycle_v2` creates or reactivates are added and those determined, settled
or deactivated removed. They are subscribed in batches (`book_batch_size`, halved on error 26)
with `use_yes_price: false` said explicitly. `sequence.py` checks every sequenced frame's `seq`
and keeps the books; on a gap the feed records it and asks for fresh snapshots (`get_snapshot`,
else delete and add the markets, else a new subscription), and a trade gap is handed to
`on_trade_gap` for a REST backfill. Every `book_check_every_s` some books are compared with
REST's; a level that still disagrees on a second look is recorded and resynced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from decimal import Decimal

from kalshi_pipeline.kalshi.auth import Signer
from kalshi_pipeline.kalshi.errors import (
    ConnectionClosedError,
    FrameDecodeError,
    KalshiError,
    KalshiWebSocketError,
    SilenceTimeoutError,
    SubscriptionError,
    SubscriptionMarketLimitExceededError,
    WebSocketAuthError,
    WebSocketHandshakeError,
)
from kalshi_pipeline.kalshi.messages import (
    BookDelta,
    BookSnapshot,
    ErrorMessage,
    EventLifecycle,
    MarketLifecycle,
    Ok,
    Subscribed,
    Trade,
    Unsubscribed,
    decode_frame,
)
from kalshi_pipeline.kalshi.rest import RestClient
from kalshi_pipeline.kalshi.websocket import KalshiWebSocket
from kalshi_pipeline.stream.config import StreamConfig
from kalshi_pipeline.stream.events import FeedEvents
from kalshi_pipeline.stream.landing import Kind, LandingLog, Source
from kalshi_pipeline.stream.pages import TICKER_PREFIX, series_of
from kalshi_pipeline.stream.sequence import (
    DELTA_PREFIX,
    SEQUENCED,
    SNAPSHOT_PREFIX,
    TRADE_PREFIX,
    BookInvalid,
    BookResynced,
    SequenceGap,
    Sequencer,
)
from kalshi_pipeline.stream.stats import EngineStats

log = logging.getLogger(__name__)
TICKER = "ticker"
TRADE = "trade"
BOOK = "orderbook_delta"
LIFECYCLE = "market_lifecycle_v2"
AUTH_BACKOFF_FLOOR_S = 5.0
# NO levels at NO-leg prices, as the book tables document; said on every order-book subscribe
# because Kalshi announced that its default will flip
USE_YES_PRICE = False
FLUSH_GAP_S = 0.001  # the landing log's buffer reaches the OS at most this long after a frame
BOOK_ADDED = frozenset({"created", "activated"})
BOOK_REMOVED = frozenset({"determined", "settled", "deactivated"})
REST_BOOKS_PER_LOOK = 100  # GET /markets/orderbooks takes up to 100 tickers
SECOND_LOOK_S = 1.0  # a disagreement is looked at again this much later (deltas in flight)


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
        on_trade_gap: Callable[[int, int, list[str] | None], object] = lambda s, u, t: None,
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
        # a trade seq gap: (last trade ms before, first after, tickers or None for all); the
        # engine hands it to the REST backfill
        self.on_trade_gap = on_trade_gap
        self.seq = Sequencer()  # seq per sid and the live books, of the current connection
        self._book_sid: int | None = None  # the order-book subscription being filled
        self._book_markets: set[str] = set()  # markets asked for on order-book subscriptions
        self._book_batch = config.book_batch_size
        self._resync_wanted: dict[int, set[str]] = {}
        self._trades_lost: SequenceGap | None = None  # a trade sid the exchange ended
        self._resync_tasks: dict[int, asyncio.Task[None]] = {}
        self._check_cursor = 0
        self._book_adds: dict[str, None] = {}  # created or reactivated, to be added
        self._book_refused: set[str] = set()  # error 26 even alone, on this connection
        self._adding: asyncio.Task[None] | None = None
        self._books_ready = asyncio.Event()
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

    async def _active_tickers(self) -> list[str]:
        """Every market open now (GET /markets status=open, all pages), off the loop."""

        def fetch() -> list[str]:
            with RestClient(
                self.config.kalshi, sign=False, requests_per_s=self.config.requests_per_s
            ) as client:
                return list(dict.fromkeys(m.ticker for m in client.get_markets(status="open")))

        return await asyncio.to_thread(fetch)

    async def _subscribe(self, ws: KalshiWebSocket) -> None:
        scope = self.config.scope
        self.seq.reset(time.time_ns() // 1_000_000)
        self._book_sid = None
        self._book_markets = set()
        self._resync_wanted.clear()
        self._resync_tasks.clear()
        self._trades_lost = None
        self._book_adds.clear()
        self._book_refused.clear()
        self._adding = None
        self._books_ready = asyncio.Event()
        streamed = [c for c in (TICKER, TRADE) if self.config.streams(c)]
        if scope.is_all:
            await ws.subscribe([*streamed, LIFECYCLE])
            what = [f"{c} (all markets)" for c in streamed]
        else:
            self._tickers = set(await self._scope_tickers())
            await ws.subscribe([LIFECYCLE])
            if streamed:
                await ws.subscribe(streamed, market_tickers=sorted(self._tickers))
            what = [f"{c} ({scope.describe()}: {len(self._tickers)} markets)" for c in streamed]
        if self.config.streams(BOOK):
            books = sorted(self._tickers) if not scope.is_all else await self._active_tickers()
            await self._subscribe_books(ws, books)
            self._books_ready.set()
            what.append(
                f"{BOOK} ({'open markets' if scope.is_all else scope.describe()}: "
                f"{len(self._book_markets)} markets, use_yes_price={str(USE_YES_PRICE).lower()})"
            )
        self._sids = {channel: sid for sid, channel in ws.subscriptions.items() if channel != BOOK}
        self.events.emit(
            "websocket",
            "subscribe",
            f"{', '.join(what)} and {LIFECYCLE}; sids {self._sids}"
            + (
                f", {BOOK} sids {sorted(self.seq.sid_markets)}" if self.config.streams(BOOK) else ""
            ),
        )
        if self.config.streams(BOOK) and self.config.book_check_every_s > 0:
            self._spawn(self._check_books_forever(), "order-book check against REST")
        if self.config.streams(BOOK) and scope.is_all:
            self._spawn(self._open_books_forever(ws), "order books of newly open markets")

    async def _subscribe_books(self, ws: KalshiWebSocket, tickers: list[str]) -> None:
        """Order-book markets in batches; error 26 halves the batch, and a subscription that
        takes no more markets is followed by a new one (when the exchange gives one)."""
        remaining = [t for t in tickers if t not in self._book_markets]
        fresh_tried: int | None = None  # the full sid, while a new subscription is tried
        while remaining:
            chunk = remaining[: self._book_batch]
            sid = self._book_sid
            try:
                if sid is None:
                    answers = await ws.subscribe(
                        [BOOK], market_tickers=chunk, use_yes_price=USE_YES_PRICE
                    )
                    sid = self._book_sid = answers[0].sid if answers else None
                else:
                    await ws.add_markets(sid, chunk)
            except SubscriptionMarketLimitExceededError as exc:
                if len(chunk) > 1:
                    self._book_batch = max(1, len(chunk) // 2)
                    self.events.emit(
                        "websocket",
                        "subscription_split",
                        f"{BOOK}: {exc.name} (error 26) for {len(chunk)} markets"
                        + (f" on sid {sid}" if sid is not None else "")
                        + f"; batches of {self._book_batch} markets from now on",
                    )
                    continue
                if sid is not None and fresh_tried is None:
                    fresh_tried = sid
                    self.events.emit(
                        "websocket",
                        "subscription_split",
                        f"{BOOK} sid {sid} takes no more markets (error 26); a new subscription "
                        f"for the other {len(remaining)}",
                    )
                    self._book_sid = None
                    continue
                if fresh_tried is not None:
                    self._book_sid = fresh_tried  # no new one: the full one stays the current
                self._book_refused.update(remaining)  # not asked again on this connection
                left = ",".join(remaining)
                self.events.emit(
                    "websocket",
                    "markets_not_subscribed",
                    f"{BOOK}: error 26 (Subscription market limit exceeded) even for one market; "
                    f"{len(remaining)} markets not subscribed: {left}"[:2000],
                )
                return
            fresh_tried = None
            if sid is not None:
                self.seq.added(sid, chunk)
            self._book_markets.update(chunk)
            remaining = remaining[len(chunk) :]

    async def _resubscribe(self, ws: KalshiWebSocket, channel: str, why: str) -> None:
        self.events.emit("websocket", "resubscribe", f"{channel}: {why}")
        if channel in (TICKER, TRADE) and not self.config.scope.is_all:
            await ws.subscribe([channel], market_tickers=sorted(self._tickers))
        else:
            await ws.subscribe([channel])
        for sid, ch in ws.subscriptions.items():
            if ch != BOOK:
                self._sids[ch] = sid
        if channel == TRADE and self._trades_lost is not None:
            lost, self._trades_lost = self._trades_lost, None
            self._trade_gap(lost)  # up to now: the new subscription streams
        self.on_gap()

    async def _resubscribe_books(
        self, ws: KalshiWebSocket, sid: int, why: str, markets: list[str]
    ) -> None:
        """An order-book sid ended (error 25 or 10, or given up): its markets on a new one."""
        self.events.emit(
            "websocket", "resubscribe", f"{BOOK} sid {sid}: {why}; {len(markets)} markets"
        )
        if self._book_sid == sid:
            self._book_sid = None
        self._book_markets.difference_update(markets)
        await self._subscribe_books(ws, markets)

    # ------------------------------------------------------------------ resync

    def _want_resync(self, ws: KalshiWebSocket, sid: int, tickers: list[str]) -> None:
        if not tickers:
            return
        self._resync_wanted.setdefault(sid, set()).update(tickers)
        task = self._resync_tasks.get(sid)
        if task is None or task.done():
            self._resync_tasks[sid] = self._spawn(self._resync(ws, sid), f"resync {BOOK} sid {sid}")

    async def _resync(self, ws: KalshiWebSocket, sid: int) -> None:
        """Fresh snapshots for the markets waiting on `sid`: `get_snapshot`; refused, delete and
        add them again; refused too, a new subscription for them."""
        while self._resync_wanted.get(sid):
            markets = sorted(t for t in self._resync_wanted.pop(sid) if t not in self.seq.gone)
            for start in range(0, len(markets), self._book_batch):
                chunk = markets[start : start + self._book_batch]
                try:
                    await ws.get_snapshot(sid, chunk)
                    continue
                except SubscriptionError as exc:
                    refused = exc
                try:
                    await ws.delete_markets(sid, chunk)
                    await ws.add_markets(sid, chunk)
                    self.events.emit(
                        "websocket",
                        "resync_fallback",
                        f"{BOOK} sid {sid}: get_snapshot refused ({refused}); deleted and added "
                        f"{len(chunk)} markets again",
                    )
                except SubscriptionError as again:
                    self.events.emit(
                        "websocket",
                        "resync_fallback",
                        f"{BOOK} sid {sid}: get_snapshot refused ({refused}) and delete/add "
                        f"too ({again}); a new subscription for its markets",
                    )
                    markets = self.seq.dropped(sid)
                    with contextlib.suppress(SubscriptionError):
                        await ws.unsubscribe([sid])
                    await self._resubscribe_books(ws, sid, "resync refused", markets)
                    return

    def _act(self, ws: KalshiWebSocket) -> None:
        """Record and act on what the sequencer found in the last frame."""
        found = self.seq.found[:]
        self.seq.found.clear()
        for f in found:
            if isinstance(f, SequenceGap):
                if f.markets is not None:
                    markets = ",".join(f.markets)
                elif self.config.scope.is_all:
                    markets = "all"
                else:
                    markets = ",".join(sorted(self._tickers))
                self.events.emit("websocket", "sequence_gap", f.detail(markets))
                if f.channel == BOOK and f.markets and not f.ended:  # ended: resubscribed
                    self._want_resync(ws, f.sid, list(f.markets))
                elif f.channel == TRADE and f.kind == "gap":
                    self._trade_gap(f)
            elif isinstance(f, BookInvalid):
                self.events.emit("websocket", "book_invalid", f"{f.ticker}: {f.why}")
                if f.sid is not None:
                    self._want_resync(ws, f.sid, [f.ticker])
            elif isinstance(f, BookResynced):
                self.events.emit(
                    "websocket",
                    "book_resynced",
                    f"{f.channel} sid {f.sid}: fresh snapshots for {len(f.markets)} markets: "
                    + ",".join(f.markets),
                )

    def _trade_gap(self, gap: SequenceGap) -> None:
        now = time.time_ns() // 1_000_000
        since = gap.since_ms if gap.since_ms is not None else now
        until = gap.until_ms if gap.until_ms is not None else now
        tickers = None if self.config.scope.is_all else sorted(self._tickers)
        try:
            self.on_trade_gap(since, until, tickers)
        except Exception as exc:  # the backfill's trouble must not stop the feed
            log.exception("on_trade_gap failed")
            self.events.emit("websocket", "backfill_failed", f"trade: {exc}"[:1000])

    # ------------------------------------------------------------------ REST cross-check

    async def _check_books_forever(self) -> None:
        every = self.config.book_check_every_s
        while True:
            await asyncio.sleep(every)
            try:
                await self.check_books()
            except KalshiError as exc:
                self.events.emit("websocket", "book_check_failed", f"{exc}"[:1000])

    def _rest_books(self, tickers: list[str]) -> dict[str, dict[tuple[str, Decimal], Decimal]]:
        with RestClient(
            self.config.kalshi, sign=False, requests_per_s=self.config.requests_per_s
        ) as client:
            books = client.get_orderbooks(tickers)
        out: dict[str, dict[tuple[str, Decimal], Decimal]] = {}
        for ticker, b in books.items():
            levels = {("yes", p): s for p, s in b.yes if s > 0}
            levels.update({("no", p): s for p, s in b.no if s > 0})
            out[ticker] = levels
        return out

    def _disagreements(
        self, rest: dict[str, dict[tuple[str, Decimal], Decimal]]
    ) -> dict[str, dict[tuple[str, Decimal], tuple[Decimal, Decimal]]]:
        """{ticker: {(side, price): (REST size, stream size)}} for valid books that differ."""
        out: dict[str, dict[tuple[str, Decimal], tuple[Decimal, Decimal]]] = {}
        for ticker, theirs in rest.items():
            book = self.seq.books.get(ticker)
            if book is None or not book.valid:
                continue
            ours = book.levels()
            diff = {
                key: (theirs.get(key, Decimal(0)), ours.get(key, Decimal(0)))
                for key in theirs.keys() | ours.keys()
                if theirs.get(key) != ours.get(key)
            }
            if diff:
                out[ticker] = diff
        return out

    async def check_books(self) -> int:
        """Compare the next (up to 100) live books with REST's; a level that disagrees twice,
        a moment apart, is recorded (`book_mismatch`) and its market resynced. Returns how many
        markets were recorded."""
        ws = self._ws
        valid = sorted(t for t, b in self.seq.books.items() if b.valid)
        if ws is None or not valid:
            return 0
        start = self._check_cursor % len(valid)
        tickers = (valid[start:] + valid[:start])[:REST_BOOKS_PER_LOOK]
        self._check_cursor = start + len(tickers)
        first = self._disagreements(await asyncio.to_thread(self._rest_books, tickers))
        if not first:
            return 0
        await asyncio.sleep(SECOND_LOOK_S)
        second = self._disagreements(await asyncio.to_thread(self._rest_books, sorted(first)))
        recorded = 0
        for ticker, levels in sorted(second.items()):
            lasting = {k: v for k, v in levels.items() if k in first[ticker]}
            if not lasting:
                continue
            recorded += 1
            for (side, price), (theirs, ours) in sorted(lasting.items()):
                self.events.emit(
                    "websocket",
                    "book_mismatch",
                    f"{ticker}: {side} {price} REST {theirs}, stream {ours}",
                )
            sid = self.seq.sid_of(ticker)
            if sid is not None:
                self._want_resync(ws, sid, self.seq.invalidate(sid, [ticker]))
        return recorded

    # ------------------------------------------------------------------ frames

    async def _pump(self, ws: KalshiWebSocket) -> None:
        """Every frame into the landing log as it is read (in the socket reader's task), the
        order-book and trade sequences followed, control frames acted on; raises the
        connection's end."""
        append = self.landing.append
        stats = self.stats
        seq = self.seq
        loop = asyncio.get_running_loop()
        flushed = 0.0  # loop time of the last hand-over to the OS
        later: asyncio.Handle | None = None

        def flush() -> None:
            nonlocal flushed, later
            later = None
            flushed = loop.time()
            self.landing.flush()

        def caught_up() -> None:
            # every frame read so far is taken: hand the buffer to the OS (a killed process then
            # loses nothing it logged), at most once per FLUSH_GAP_S: at the firehose's rates the
            # reader catches up after every read of the socket, and a write(2) each time was a
            # tenth of its time
            nonlocal later
            if later is None:
                wait = flushed + FLUSH_GAP_S - loop.time()
                if wait <= 0:
                    flush()
                else:
                    later = loop.call_later(wait, flush)

        def take(data: bytes, received_ns: int) -> None:
            append(Kind.WS_FRAME, Source.WEBSOCKET, data, received_ns)
            stats.ws_frames += 1
            stats.ws_bytes += len(data)
            stats.records_arrived()
            if not data.startswith(TICKER_PREFIX):
                if data.startswith(DELTA_PREFIX):
                    seq.delta(data)
                elif data.startswith(TRADE_PREFIX):
                    seq.trade(data)
                elif data.startswith(SNAPSHOT_PREFIX):
                    seq.snapshot(data)
                else:
                    self._control(ws, data)
                if seq.found:
                    self._act(ws)

        await ws.deliver(take, caught_up)

    def _spawn(self, coro: object, what: str) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await coro  # type: ignore[misc]
            except (KalshiError, ConnectionClosedError) as exc:
                self.events.emit("websocket", "command_failed", f"{what}: {exc}"[:1000])

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
        seq = self.seq
        if isinstance(msg, BookDelta):  # keys in another order than Kalshi's: the slow path
            seq.delta(data)
        elif isinstance(msg, BookSnapshot):
            seq.snapshot(data)
        elif isinstance(msg, Trade):
            seq.trade(data)
        elif isinstance(msg, Subscribed):
            if msg.channel in SEQUENCED:
                seq.subscribed(msg.sid, msg.channel)
        elif isinstance(msg, Ok | Unsubscribed):
            seq.number(msg.sid, msg.seq)
            if isinstance(msg, Unsubscribed) and msg.sid is not None:
                seq.dropped(msg.sid)
        elif isinstance(msg, ErrorMessage):
            error = msg.to_exception(data)
            if error.terminal and msg.sid is not None and msg.sid in seq.sid_markets:
                # an order-book sid the exchange ended (25: it dropped frames for a slow
                # reader): the loss is a sequence gap until its markets' fresh snapshots
                markets = seq.ended(msg.sid, msg.code, msg.seq)
                self._resync_wanted.pop(msg.sid, None)  # the new subscription brings snapshots
                self._spawn(
                    self._resubscribe_books(ws, msg.sid, str(error), markets),
                    f"resubscribe {BOOK} {msg.sid}",
                )
                return
            if error.terminal and msg.sid is not None:
                # a trade sid: the trades from the last one received are lost until the new
                # subscription streams; then they are backfilled from REST (`_resubscribe`)
                lost = seq.trade_ended(msg.sid, msg.code, msg.seq)
                self._trades_lost = self._trades_lost or lost  # the earlier window covers it
            else:
                seq.number(msg.sid, msg.seq)
            self._error(ws, msg, data)
        elif isinstance(msg, EventLifecycle):
            if msg.series_ticker:
                self._event_series[msg.event_ticker] = msg.series_ticker
        elif isinstance(msg, MarketLifecycle):
            self._follow(ws, msg)

    def _error(self, ws: KalshiWebSocket, msg: ErrorMessage, data: bytes) -> None:
        error = msg.to_exception(data)
        channel = next((c for c, s in self._sids.items() if s == msg.sid), None)
        if error.terminal and channel is not None:
            self._spawn(self._resubscribe(ws, channel, str(error)), f"resubscribe {channel}")
        elif msg.cmd_id is not None and msg.code in (14, 26):
            return  # the answer to an order-book command: its caller acts on it and records it
        elif msg.code == 14 and msg.sid is not None and msg.sid in self.seq.sid_markets:
            self._book_sid_lacks_markets(ws, msg.sid, error)
        elif msg.code == 14 and msg.sid is None:
            self.events.emit(
                "websocket",
                "server_error",
                f"{error}: an order-book command went without its market tickers; this is a "
                "bug in kalshi-pipeline, please report it with this event"[:1000],
            )
        else:
            self.events.emit("websocket", "server_error", str(error)[:1000])

    def _book_sid_lacks_markets(self, ws: KalshiWebSocket, sid: int, error: Exception) -> None:
        """Error 14 (Market Ticker required) unasked, naming an order-book sid: Kalshi holds
        that subscription without (some of) its markets, so its books may stop changing. They
        are recorded invalid (`book_invalid` naming the sid's markets) and resynced:
        `get_snapshot`, or if Kalshi refuses it, delete and add them again, or a new
        subscription."""
        markets = self.seq.markets_of(sid)
        self.events.emit(
            "websocket",
            "server_error",
            f"{error}: unasked, on {BOOK} sid {sid} ({len(markets)} markets); its books are "
            "resynced"[:1000],
        )
        if not markets:
            return
        self.events.emit(
            "websocket",
            "book_invalid",
            f"{BOOK} sid {sid}: error 14 (Market Ticker required) unasked on the subscription; "
            f"markets: {','.join(markets)}",
        )
        self._want_resync(ws, sid, self.seq.invalidate(sid, markets))

    def _in_scope(self, m: MarketLifecycle) -> bool:
        scope = self.config.scope
        if scope.is_all:
            return True
        if m.market_ticker in scope.tickers:
            return True
        event = m.additional_metadata.event_ticker if m.additional_metadata else None
        if event and event in scope.events:
            return True
        series = self._event_series.get(event or "") or series_of(event)
        return bool(series and series in scope.series)

    def _follow(self, ws: KalshiWebSocket, m: MarketLifecycle) -> None:
        if self.config.streams(BOOK):
            self._follow_books(ws, m)
        if self.config.scope.is_all:
            return  # ticker and trade have no market filter
        sids = [self._sids[c] for c in (TICKER, TRADE) if c in self._sids]
        if not sids:
            return
        ticker = m.market_ticker
        if m.event_type == "created" and ticker not in self._tickers and self._in_scope(m):
            self._tickers.add(ticker)
            self.events.emit("websocket", "markets_added", ticker)
            for sid in sids:
                self._spawn(ws.add_markets(sid, [ticker]), f"add {ticker}")
        elif m.event_type == "settled" and ticker in self._tickers:
            self._tickers.discard(ticker)
            self.events.emit("websocket", "markets_removed", ticker)
            for sid in sids:
                self._spawn(ws.delete_markets(sid, [ticker]), f"delete {ticker}")

    def _follow_books(self, ws: KalshiWebSocket, m: MarketLifecycle) -> None:
        ticker = m.market_ticker
        if m.event_type in BOOK_ADDED:
            if ticker in self._book_markets or ticker in self._book_adds or not self._in_scope(m):
                return
            self._book_adds[ticker] = None
            self.events.emit("websocket", "markets_added", f"{BOOK}: {ticker}")
            if self._adding is None or self._adding.done():
                self._adding = self._spawn(self._add_books(ws), f"add {BOOK} markets")
        elif m.event_type in BOOK_REMOVED:
            self._book_adds.pop(ticker, None)
            if ticker not in self._book_markets:
                return
            sid = self.seq.sid_of(ticker)
            self._book_markets.discard(ticker)
            self.seq.removed([ticker])
            self.events.emit("websocket", "markets_removed", f"{BOOK}: {ticker}")
            if sid is not None:
                self._spawn(ws.delete_markets(sid, [ticker]), f"delete {BOOK} {ticker}")

    async def _open_books_forever(self, ws: KalshiWebSocket) -> None:
        """Scope "all": markets open now without an order-book subscription (listed before the
        stream started, opened on schedule since: no lifecycle event says so) are added."""
        while True:
            await asyncio.sleep(self.config.book_open_markets_every_s)
            try:
                open_now = await self._active_tickers()
            except KalshiError as exc:
                self.events.emit("websocket", "book_check_failed", f"open markets: {exc}"[:1000])
                continue
            # not those the lifecycle removed meanwhile (REST may list them a moment longer)
            known = self._book_markets | self._book_refused | self._book_adds.keys() | self.seq.gone
            for ticker in open_now:
                if ticker not in known:
                    self._book_adds[ticker] = None
                    self.events.emit("websocket", "markets_added", f"{BOOK}: {ticker}")
            if self._book_adds and (self._adding is None or self._adding.done()):
                self._adding = self._spawn(self._add_books(ws), f"add {BOOK} markets")

    async def _add_books(self, ws: KalshiWebSocket) -> None:
        """Markets the lifecycle channel brought, added in batches once the first order-book
        subscription of this connection is made."""
        await self._books_ready.wait()
        while self._book_adds:
            batch = list(self._book_adds)[: self._book_batch]
            for t in batch:
                del self._book_adds[t]
            await self._subscribe_books(ws, batch)

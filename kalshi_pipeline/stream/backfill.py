"""Trade backfill: the trades of a window fetched from `GET /markets/trades` and landed raw.

When the trade channel may have lost trades (a seq gap, a reconnect), the WebSocket feed calls
`TradeBackfill.on_trade_gap(since_ms, until_ms, tickers)` from its asyncio loop; the work runs in
one worker thread of its own, one window after another, so the loop never waits for HTTP. Each
page is appended to the landing log as received (`Kind.TRADES_PAGE`: a JSON meta line, then the
body), so the writer stores its trades in `trades` with source `http` and replay reprocesses it;
a trade the socket delivered too is stored once (the table keeps the first copy of a
`trade_id`). The writer records `trades_backfilled` ("trade: <n> trades (<m> new) between <from>
and <to>") after the last page of the attempt that finished.

Kalshi takes `min_ts`/`max_ts` in whole seconds and does not document whether they are
inclusive, so the window is asked for one second wider at each end (the extra trades are real,
and stored once like the rest). A few markets are asked for one by one (`ticker`); more than
`PER_MARKET_QUERIES` in one sweep of every market, of which the writer keeps those listed.

A failure is never fatal: the client retries each request (429, 5xx, network) with backoff
inside the rate limit, and a backfill that still fails is tried again, whole, a few times with
a growing pause; then `backfill_failed` is recorded with the reason. Pages landed by a failed
attempt are stored all the same.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import msgspec

from kalshi_pipeline.kalshi.errors import FrameDecodeError, KalshiError
from kalshi_pipeline.kalshi.messages import decode_page_cursor
from kalshi_pipeline.kalshi.ratelimit import TokenBucket
from kalshi_pipeline.kalshi.rest import RawResponse, RestClient, RetryNotice
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.stream.config import StreamConfig
from kalshi_pipeline.stream.events import FeedEvents
from kalshi_pipeline.stream.landing import Kind, LandingLog, Source
from kalshi_pipeline.stream.pages import TradesPageMeta, iso_ms

log = logging.getLogger(__name__)
CLOSED = "the backfill was stopped (the stream is stopping)"

PER_MARKET_QUERIES = 10
"""Up to this many markets, one query each; more, one query for all (a few pages per second of
Kalshi's whole tape are cheaper than hundreds of requests at 20 a second)."""


@dataclass(frozen=True)
class BackfillResult:
    """What one backfill did (the feed event in the database says the same)."""

    backfill_id: str
    since_ms: int
    until_ms: int
    tickers: tuple[str, ...] | None
    ok: bool
    attempts: int = 0
    pages: int = 0  # landed by the last attempt
    trades: int = 0  # received by the last attempt (before keeping the listed markets)
    retries: int = 0  # requests the client retried, over all attempts
    error: str | None = None


class TradeBackfill:
    """Backfills trade windows in one worker thread. Thread-safe; `close()` when done."""

    def __init__(
        self,
        settings: KalshiSettings,
        landing: LandingLog,
        events: FeedEvents,
        *,
        sign: bool = False,
        requests_per_s: float | None = None,
        limiter: TokenBucket | None = None,
        attempts: int = 3,
        retry_pause_s: float = 5.0,
        page_limit: int = 1000,
        client_factory: Callable[..., RestClient] = RestClient,
        client_options: dict[str, float] | None = None,
    ) -> None:
        """`limiter`: a token bucket shared with the process's other REST clients (the poller's),
        so that together they stay inside the account's limit; else the client's own.
        `client_options`: RestClient's retry settings (max_retries, backoff_base_s, ...)."""
        if attempts < 1:
            raise ValueError(f"attempts={attempts} must be at least 1")
        self.settings = settings
        self.landing = landing
        self.events = events
        self.sign = sign
        self.requests_per_s = requests_per_s
        self.limiter = limiter
        self.attempts = attempts
        self.retry_pause_s = retry_pause_s
        self.page_limit = page_limit
        self._client_factory = client_factory
        self._client_options = dict(client_options or {})
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kalshi-backfill")
        self._stop = threading.Event()

    @classmethod
    def for_stream(
        cls, config: StreamConfig, landing: LandingLog, events: FeedEvents
    ) -> TradeBackfill:
        """The stream engine's backfill: its environment and its REST rate setting."""
        return cls(config.kalshi, landing, events, requests_per_s=config.requests_per_s)

    # ------------------------------------------------------------------ control

    def on_trade_gap(
        self, since_ms: int, until_ms: int, tickers: Iterable[str] | None = None
    ) -> Future[BackfillResult]:
        """Queue a backfill of [since_ms, until_ms] (of `tickers`, or every market when None)
        and return at once; the future tells the outcome. Safe to call from an asyncio loop;
        after `close()` the future is done at once, not ok."""
        window = self._checked(since_ms, until_ms, tickers)
        if not self._stop.is_set():
            try:
                return self._pool.submit(self.backfill, *window)
            except RuntimeError:  # closed meanwhile
                pass
        closed: Future[BackfillResult] = Future()
        closed.set_result(BackfillResult(uuid.uuid4().hex, *window, ok=False, error=CLOSED))
        return closed

    def close(self) -> None:
        """Stop: queued backfills are dropped, the one under way ends at its next request or
        retry (recording `backfill_failed`). Returns once the worker is idle, so the landing
        log can be closed after it."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ work

    @staticmethod
    def _checked(
        since_ms: int, until_ms: int, tickers: Iterable[str] | None
    ) -> tuple[int, int, tuple[str, ...] | None]:
        if since_ms > until_ms:
            raise ValueError(
                f"a trade backfill from {since_ms} to {until_ms} ms ends before it starts"
            )
        if since_ms < 0:
            raise ValueError(f"since_ms={since_ms} is not a time in ms since the epoch")
        if isinstance(tickers, str):  # a lone ticker would be read letter by letter
            raise ValueError(f"tickers={tickers!r} must be a list of market tickers")
        return since_ms, until_ms, tuple(dict.fromkeys(tickers)) if tickers is not None else None

    def backfill(
        self, since_ms: int, until_ms: int, tickers: Iterable[str] | None = None
    ) -> BackfillResult:
        """Backfill one window in the calling thread; a REST failure is recorded as
        `backfill_failed` and returned, never raised."""
        since_ms, until_ms, wanted = self._checked(since_ms, until_ms, tickers)
        result = BackfillResult(uuid.uuid4().hex, since_ms, until_ms, wanted, ok=True)
        if wanted == ():  # no market to ask about: nothing can be missing
            return result
        retries: list[RetryNotice] = []
        error = ""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1 and self._stop.wait(self.retry_pause_s * 2 ** (attempt - 2)):
                error = f"{CLOSED} ({error})"
                break
            result = replace(result, attempts=attempt, pages=0, trades=0)
            try:
                result = self._attempt(result, retries)
                return replace(result, retries=len(retries))
            except _Stopped:
                error = f"{CLOSED} during attempt {attempt}"
                break
            except (KalshiError, FrameDecodeError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.info("trade backfill attempt %d failed: %s", attempt, error)
        result = replace(result, ok=False, retries=len(retries), error=error)
        self.events.emit(
            "http",
            "backfill_failed",
            f"trade: the trades between {iso_ms(since_ms)} and {iso_ms(until_ms)}"
            f"{_of(wanted)} could not be fetched after {result.attempts} attempts "
            f"({len(retries)} requests retried): {error}"[:1000],
        )
        return result

    def _attempt(self, result: BackfillResult, retries: list[RetryNotice]) -> BackfillResult:
        """Every page of the window, each landed as it comes; raises on a failure."""

        def on_retry(notice: RetryNotice) -> None:
            retries.append(notice)
            if self._stop.is_set():  # before the client's backoff sleep
                raise _Stopped

        wanted = result.tickers
        tickers = list(wanted) if wanted is not None else None
        pages = trades = 0
        with self._client(on_retry) as client:
            for raw, last in self._pages(client, result.since_ms, result.until_ms, wanted):
                pages += 1
                trades += _count_trades(raw.body)
                meta = TradesPageMeta(
                    backfill_id=result.backfill_id,
                    attempt=result.attempts,
                    page=pages,
                    since_ms=result.since_ms,
                    until_ms=result.until_ms,
                    tickers=tickers,
                    last=last,
                )
                self.landing.append(
                    Kind.TRADES_PAGE, Source.HTTP, msgspec.json.encode(meta) + b"\n" + raw.body
                )
                self.landing.flush()
                if self._stop.is_set() and not last:
                    raise _Stopped
        return replace(result, pages=pages, trades=trades)

    def _client(self, on_retry: Callable[[RetryNotice], None]) -> RestClient:
        client = self._client_factory(
            self.settings,
            sign=self.sign,
            requests_per_s=self.requests_per_s,
            on_retry=on_retry,
            **self._client_options,
        )
        if self.limiter is not None:
            client.limiter = self.limiter
        return client

    def _pages(
        self,
        client: RestClient,
        since_ms: int,
        until_ms: int,
        wanted: tuple[str, ...] | None,
    ) -> Iterator[tuple[RawResponse, bool]]:
        """Each page as it comes (landed before the next is asked for), and whether it is the
        backfill's last."""
        # whole seconds, one wider at each end: Kalshi does not say whether the ends are in
        window = {"min_ts": max(0, since_ms // 1000 - 1), "max_ts": until_ms // 1000 + 1}
        sweeps: list[str | None] = (
            [None] if wanted is None or len(wanted) > PER_MARKET_QUERIES else list(wanted)
        )
        for n, ticker in enumerate(sweeps, 1):
            for raw in client.iter_trades_raw(ticker=ticker, limit=self.page_limit, **window):
                done = not decode_page_cursor(raw.body, "GET /markets/trades body")
                yield raw, done and n == len(sweeps)


class _Stopped(Exception):
    pass


class _TradeCount(msgspec.Struct):
    trades: list[msgspec.Raw] | None = None


_COUNT = msgspec.json.Decoder(_TradeCount)


def _count_trades(body: bytes) -> int:
    """How many trade objects a page holds (the writer decodes them; a page that does not parse
    counts 0 here and is recorded by the writer as a parse error)."""
    try:
        return len(_COUNT.decode(body).trades or ())
    except msgspec.DecodeError:
        return 0


def _of(wanted: tuple[str, ...] | None) -> str:
    if wanted is None:
        return ""
    shown = ", ".join(wanted[:5]) + (f" and {len(wanted) - 5} more" if len(wanted) > 5 else "")
    return f" of {shown}"

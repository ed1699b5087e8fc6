"""Kalshi REST client on `requests`: signed, rate-limited, retried, with typed errors.

Every call has connect and read timeouts; 429 and 5xx (and network errors) are retried with
capped exponential backoff and full jitter inside a token-bucket limit sized by the account's
rate-limit tier (KALSHI_RATE_TIER; Basic: 20 reads/s, 3 s of burst). No Accept-Language is sent.
Kalshi's 429 carries no Retry-After, so the backoff is ours. Error bodies come in three shapes
plus the 429 one; all become one exception hierarchy.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from kalshi_pipeline.kalshi import messages
from kalshi_pipeline.kalshi.auth import Signer
from kalshi_pipeline.kalshi.errors import (
    KalshiAPIError,
    KalshiAuthError,
    KalshiBadRequestError,
    KalshiConnectionError,
    KalshiNotFoundError,
    KalshiRateLimitError,
    KalshiServerError,
    auth_hint,
    auth_reason,
    parse_error_body,
)
from kalshi_pipeline.kalshi.ratelimit import TokenBucket, read_limiter
from kalshi_pipeline.kalshi.settings import KalshiSettings

log = logging.getLogger(__name__)

MARKET_STATUS_FILTERS = ("unopened", "open", "paused", "closed", "settled")
MAX_MARKETS_LIMIT = 1000
MAX_EVENTS_LIMIT = 200
MAX_TRADES_LIMIT = 1000
MAX_ORDERBOOK_TICKERS = 100  # GET /markets/orderbooks takes 1 to 100 tickers
MAX_ORDERBOOK_DEPTH = 100
USER_AGENT = "kalshi-pipeline/0.1"


@dataclass(frozen=True)
class RetryNotice:
    """Told to `on_retry` before each backoff sleep, so callers can record rate-limit stretches."""

    method: str
    path: str
    attempt: int
    status: int | None
    delay_s: float
    error: str


@dataclass(frozen=True)
class RawResponse:
    """A successful response body as received, before decoding (the landing log keeps it)."""

    url: str
    status: int
    body: bytes
    elapsed_s: float
    attempts: int


def api_error(
    method: str, url: str, status: int, body: bytes, *, signer: object | None = None
) -> KalshiAPIError:
    """The typed exception for a non-2xx answer, its message carrying Kalshi's code and details.

    A 401's message names the key id and key file of `signer` (when given) and what to fix.
    """
    code, message, details = parse_error_body(body)
    parts = [p for p in (code, message, details) if p]
    said = ": " + " / ".join(dict.fromkeys(parts)) if parts else ""
    text = f"{method} {url} answered HTTP {status}{said}"
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "details": details,
        "body": body,
        "url": url,
    }
    if status in (401, 403):
        reason = auth_reason(code, details)
        hint = auth_hint(reason, getattr(signer, "key_id", None), getattr(signer, "key_file", None))
        return KalshiAuthError(f"{text}; {hint}", reason=reason, **kwargs)
    if status == 404:
        return KalshiNotFoundError(text, **kwargs)
    if status == 429:
        return KalshiRateLimitError(text + "; the rate limit held after every retry", **kwargs)
    if status >= 500:
        return KalshiServerError(text + "; the server kept failing after every retry", **kwargs)
    return KalshiBadRequestError(text, **kwargs)


class RestClient:
    """One `requests.Session` against one environment. Use one client per thread."""

    def __init__(
        self,
        settings: KalshiSettings,
        *,
        signer: Signer | None = None,
        sign: bool = True,
        requests_per_s: float | None = None,
        burst: float | None = None,
        connect_timeout_s: float = 3.05,
        read_timeout_s: float = 10.0,
        max_retries: int = 8,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 8.0,
        on_retry: Callable[[RetryNotice], None] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = settings.rest_url.rstrip("/")
        self._signer = signer if signer is not None or not sign else settings.signer()
        self.limiter = read_limiter(settings.rate_tier, requests_per_s=requests_per_s)
        if burst is not None:
            self.limiter = TokenBucket(self.limiter.rate, burst)
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.on_retry = on_retry
        self.session = session or requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        # Kalshi translates titles and rules when asked (Accept-Language, since Aug 2026); stored
        # text stays English, so a session handed in must not ask either.
        self.session.headers.pop("Accept-Language", None)

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backoff_delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
        return random.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2**attempt))

    def request_raw(
        self, method: str, path: str, params: dict[str, Any] | None = None
    ) -> RawResponse:
        """Send one request with limiter, signature, timeouts and retries; raise on failure."""
        url = f"{self.base_url}{path}"
        started = time.monotonic()
        attempt = 0
        while True:
            self.limiter.acquire()
            headers = self._signer.headers(method, url) if self._signer else {}
            status: int | None = None
            try:
                resp = self.session.request(
                    method, url, params=params, headers=headers, timeout=self.timeout
                )
                status = resp.status_code
                body = resp.content
                if status < 400:
                    return RawResponse(
                        resp.url, status, body, time.monotonic() - started, attempt + 1
                    )
                if status != 429 and status < 500:
                    raise api_error(method, resp.url, status, body, signer=self._signer)
                error = f"HTTP {status}"
                final: Exception = api_error(method, resp.url, status, body)
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = f"{type(exc).__name__}: {exc}"
                final = KalshiConnectionError(
                    f"{method} {url} failed after {attempt + 1} attempts: {error}"
                )
            if attempt >= self.max_retries:
                raise final
            delay = self.backoff_delay(attempt)
            attempt += 1
            if self.on_retry is not None:
                self.on_retry(RetryNotice(method, path, attempt, status, delay, error))
            log.debug("retrying %s %s in %.2fs after %s", method, path, delay, error)
            time.sleep(delay)

    def get_raw(self, path: str, params: dict[str, Any] | None = None) -> RawResponse:
        return self.request_raw("GET", path, params)

    # ------------------------------------------------------------------ endpoints

    @staticmethod
    def market_params(
        *,
        limit: int = MAX_MARKETS_LIMIT,
        cursor: str | None = None,
        event_ticker: str | None = None,
        series_ticker: str | None = None,
        tickers: Sequence[str] | None = None,
        status: str | None = None,
        min_created_ts: int | None = None,
        max_created_ts: int | None = None,
        min_close_ts: int | None = None,
        max_close_ts: int | None = None,
        min_settled_ts: int | None = None,
        max_settled_ts: int | None = None,
        min_updated_ts: int | None = None,
        mve_filter: str | None = None,
    ) -> dict[str, Any]:
        """Query parameters for GET /markets, checked before anything is sent."""
        if not 1 <= limit <= MAX_MARKETS_LIMIT:
            raise ValueError(f"limit={limit} must be between 1 and {MAX_MARKETS_LIMIT}")
        if status is not None and status not in MARKET_STATUS_FILTERS:
            raise ValueError(
                f"status={status!r} must be one of {', '.join(MARKET_STATUS_FILTERS)} "
                "(filter names, not market statuses: 'open' matches status 'active')"
            )
        if mve_filter is not None and mve_filter not in ("only", "exclude"):
            raise ValueError(f"mve_filter={mve_filter!r} must be 'only' or 'exclude'")
        params: dict[str, Any] = {
            "limit": limit,
            "cursor": cursor or None,
            "event_ticker": event_ticker,
            "series_ticker": series_ticker,
            "tickers": ",".join(tickers) if tickers else None,
            "status": status,
            "min_created_ts": min_created_ts,
            "max_created_ts": max_created_ts,
            "min_close_ts": min_close_ts,
            "max_close_ts": max_close_ts,
            "min_settled_ts": min_settled_ts,
            "max_settled_ts": max_settled_ts,
            "min_updated_ts": min_updated_ts,
            "mve_filter": mve_filter,
        }
        return {k: v for k, v in params.items() if v is not None}

    def iter_markets_raw(self, **filters: Any) -> Iterator[RawResponse]:
        """Every page of GET /markets as received, following the cursor to its final `""`."""
        cursor: str | None = filters.pop("cursor", None)
        seen: set[str] = set()
        while True:
            raw = self.get_raw("/markets", self.market_params(cursor=cursor, **filters))
            yield raw
            cursor = messages.decode_page_cursor(raw.body, "GET /markets body")
            if not cursor:
                return
            if cursor in seen:  # a server that loops would otherwise never end
                raise KalshiBadRequestError(
                    f"GET /markets returned cursor {cursor!r} twice; stopping", status=200
                )
            seen.add(cursor)

    def iter_market_pages(self, **filters: Any) -> Iterator[messages.MarketsPage]:
        for raw in self.iter_markets_raw(**filters):
            yield messages.decode_markets_page(raw.body)

    def get_markets(self, **filters: Any) -> list[messages.Market]:
        """All markets matching the filters (every page)."""
        return [m for page in self.iter_market_pages(**filters) for m in page.markets]

    def get_market(self, ticker: str) -> messages.Market:
        if not ticker or "/" in ticker:
            raise ValueError(f"ticker={ticker!r} is not a market ticker")
        return messages.decode_market(self.get_raw(f"/markets/{ticker}").body)

    def get_exchange_status(self) -> messages.ExchangeStatus:
        return messages.decode_exchange_status(self.get_raw("/exchange/status").body)

    def iter_event_pages(
        self,
        *,
        limit: int = MAX_EVENTS_LIMIT,
        status: str | None = None,
        series_ticker: str | None = None,
        with_nested_markets: bool = False,
    ) -> Iterator[messages.EventsPage]:
        if not 1 <= limit <= MAX_EVENTS_LIMIT:
            raise ValueError(f"limit={limit} must be between 1 and {MAX_EVENTS_LIMIT}")
        if status is not None and status not in ("unopened", "open", "closed", "settled"):
            raise ValueError(f"status={status!r} must be unopened, open, closed or settled")
        cursor = ""
        while True:
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            if status:
                params["status"] = status
            if series_ticker:
                params["series_ticker"] = series_ticker
            if with_nested_markets:
                params["with_nested_markets"] = "true"
            page = messages.decode_events_page(self.get_raw("/events", params).body)
            yield page
            if not page.cursor or page.cursor == cursor:
                return
            cursor = page.cursor

    def get_events(self, **kwargs: Any) -> list[messages.Event]:
        return [e for page in self.iter_event_pages(**kwargs) for e in page.events]

    # ------------------------------------------------------------------ books and trades

    @staticmethod
    def _depth_param(depth: int | None) -> dict[str, Any]:
        if depth is None:
            return {}
        if not 0 <= depth <= MAX_ORDERBOOK_DEPTH:
            raise ValueError(
                f"depth={depth} must be between 0 (every level) and {MAX_ORDERBOOK_DEPTH}"
            )
        return {"depth": depth}

    @staticmethod
    def _ticker(ticker: str) -> str:
        if not ticker or "/" in ticker or "," in ticker or ticker != ticker.strip():
            raise ValueError(f"ticker={ticker!r} is not a market ticker")
        return ticker

    def get_orderbook(self, ticker: str, depth: int | None = None) -> messages.BookSnapshot:
        """`GET /markets/{ticker}/orderbook`: one market's resting bids, both sides."""
        params = self._depth_param(depth)
        raw = self.get_raw(f"/markets/{self._ticker(ticker)}/orderbook", params or None)
        return messages.decode_orderbook(raw.body, ticker)

    def iter_orderbooks_raw(
        self, tickers: Sequence[str], depth: int | None = None
    ) -> Iterator[RawResponse]:
        """`GET /markets/orderbooks` bodies as received, 100 tickers a request (Kalshi's limit),
        each ticker asked once, as a repeated `tickers` parameter."""
        wanted = list(dict.fromkeys(self._ticker(t) for t in tickers))
        params = self._depth_param(depth)
        for i in range(0, len(wanted), MAX_ORDERBOOK_TICKERS):
            chunk = wanted[i : i + MAX_ORDERBOOK_TICKERS]
            yield self.get_raw("/markets/orderbooks", {"tickers": chunk, **params})

    def get_orderbooks(
        self, tickers: Sequence[str], depth: int | None = None
    ) -> dict[str, messages.BookSnapshot]:
        """The books of `tickers` by ticker (more than 100 take several requests); a ticker the
        exchange does not list is absent. Levels are exact decimals, ascending (best bid last),
        NO at NO-leg prices; `depth` keeps that many best levels a side (0 or None: all)."""
        books: dict[str, messages.BookSnapshot] = {}
        for raw in self.iter_orderbooks_raw(tickers, depth):
            page = messages.decode_orderbooks(raw.body)
            for reason in page.skipped:
                log.warning("GET /markets/orderbooks: %s", reason)
            books.update(page.books)
        return {t: books[t] for t in dict.fromkeys(tickers) if t in books}  # in the order asked

    @staticmethod
    def trade_params(
        *,
        min_ts: int | None = None,
        max_ts: int | None = None,
        ticker: str | None = None,
        limit: int = MAX_TRADES_LIMIT,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Query parameters for GET /markets/trades (`min_ts`, `max_ts` in Unix seconds)."""
        if not 1 <= limit <= MAX_TRADES_LIMIT:
            raise ValueError(f"limit={limit} must be between 1 and {MAX_TRADES_LIMIT}")
        for name, value in (("min_ts", min_ts), ("max_ts", max_ts)):
            if value is not None and not 0 <= value < 10**11:
                raise ValueError(
                    f"{name}={value} is not a time in Unix seconds (GET /markets/trades takes "
                    "seconds, not milliseconds)"
                )
        if min_ts is not None and max_ts is not None and min_ts > max_ts:
            raise ValueError(f"min_ts={min_ts} is after max_ts={max_ts}")
        params: dict[str, Any] = {
            "limit": limit,
            "cursor": cursor or None,
            "ticker": RestClient._ticker(ticker) if ticker is not None else None,
            "min_ts": min_ts,
            "max_ts": max_ts,
        }
        return {k: v for k, v in params.items() if v is not None}

    def iter_trades_raw(
        self,
        *,
        min_ts: int | None = None,
        max_ts: int | None = None,
        ticker: str | None = None,
        limit: int = MAX_TRADES_LIMIT,
    ) -> Iterator[RawResponse]:
        """Every page of GET /markets/trades as received, following the cursor to its `""`."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            params = self.trade_params(
                min_ts=min_ts, max_ts=max_ts, ticker=ticker, limit=limit, cursor=cursor
            )
            raw = self.get_raw("/markets/trades", params)
            yield raw
            cursor = messages.decode_page_cursor(raw.body, "GET /markets/trades body")
            if not cursor:
                return
            if cursor in seen:
                raise KalshiBadRequestError(
                    f"GET /markets/trades returned cursor {cursor!r} twice; stopping", status=200
                )
            seen.add(cursor)

    def iter_trades(
        self,
        *,
        min_ts: int | None = None,
        max_ts: int | None = None,
        ticker: str | None = None,
        limit: int = MAX_TRADES_LIMIT,
    ) -> Iterator[messages.Trade]:
        """The trades between `min_ts` and `max_ts` (Unix seconds, as Kalshi takes them), of one
        market or all, newest first, page by page."""
        for raw in self.iter_trades_raw(min_ts=min_ts, max_ts=max_ts, ticker=ticker, limit=limit):
            page = messages.decode_trades_page(raw.body)
            for reason in page.skipped:
                log.warning("GET /markets/trades: %s", reason)
            yield from page.trades

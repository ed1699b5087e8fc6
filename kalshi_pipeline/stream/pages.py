"""What the receiving side (the feed, the poller, the trade backfill) and the writer share: the
meta lines written beside the pages they land, and how a frame or a ticker is recognized.

Kept apart from `writer.py` so that the engine's receiving process imports neither DuckDB nor
Arrow (the writer runs in the store process, `store.py`).
"""

from __future__ import annotations

import time

import msgspec

TICKER_PREFIX = b'{"type":"ticker"'


def series_of(event_ticker: str | None) -> str | None:
    """Kalshi's event tickers start with their series ticker (KXBTCD-25JUL2117 → KXBTCD)."""
    return event_ticker.split("-", 1)[0] if event_ticker else None


class PageMeta(msgspec.Struct):
    pass_id: int
    page: int
    purpose: str = "poll"


class PassFigures(msgspec.Struct):
    pass_id: int
    purpose: str
    started_ns: int
    finished_ns: int
    pages: int
    requests: int
    retries: int
    response_bytes: int


class TradesPageMeta(msgspec.Struct):
    """The meta line of a backfill's `GET /markets/trades` page (`Kind.TRADES_PAGE`).

    A backfill asks for the trades of [since_ms, until_ms] (of `tickers`, or every market when
    None) in one or more attempts; `last` marks the final page of the attempt that finished."""

    backfill_id: str
    attempt: int
    page: int
    since_ms: int
    until_ms: int
    tickers: list[str] | None = None
    last: bool = False


def iso_ms(ms: int) -> str:
    """`2026-11-27T23:01:02.345Z`: a feed event's way of writing a time."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"

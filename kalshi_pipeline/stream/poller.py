"""The HTTP poller: one pass over the scope every `poll_interval_s`, inside the rate limit.

Each page is appended to the landing log as received; the writer stores only markets whose top
of book, sizes or counts changed since the previous pass. A pass that cannot fit in the interval
under the limit stretches the interval and says so. Passes also serve as reconciliation: at
start and after every reconnect one pass records the state of the scope, since the ticker
channel has no replay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from kalshi_pipeline.kalshi.errors import (
    FrameDecodeError,
    KalshiAuthError,
    KalshiError,
)
from kalshi_pipeline.kalshi.messages import ExchangeStatus
from kalshi_pipeline.kalshi.rest import RawResponse, RestClient, RetryNotice
from kalshi_pipeline.stream.config import Scope, StreamConfig
from kalshi_pipeline.stream.events import FeedEvents
from kalshi_pipeline.stream.landing import Kind, LandingLog, Source
from kalshi_pipeline.stream.pages import PageMeta, PassFigures
from kalshi_pipeline.stream.stats import EngineStats

log = logging.getLogger(__name__)
TICKERS_PER_REQUEST = 100


@dataclass(frozen=True)
class PassResult:
    pass_id: int
    purpose: str
    ok: bool
    segment: str
    end: int  # landing position just after the pass's figures


def scope_requests(scope: Scope) -> list[dict[str, Any]]:
    """The GET /markets filters that together cover a scope."""
    if scope.is_all:
        return [{"status": "open"}]
    reqs: list[dict[str, Any]] = [{"series_ticker": s, "status": "open"} for s in scope.series]
    reqs += [{"event_ticker": e} for e in scope.events]
    tickers = list(scope.tickers)
    for i in range(0, len(tickers), TICKERS_PER_REQUEST):
        reqs.append({"tickers": tickers[i : i + TICKERS_PER_REQUEST]})
    return reqs


def _state_word(exchange_active: bool | None, trading_active: bool | None) -> str:
    if exchange_active is False:
        return "maintenance"
    return "closed" if trading_active is False else "open"


def describe_exchange(status: ExchangeStatus) -> str:
    """`exchange=open shards=1:open,2:closed,3:open`: the words `open`, `closed` (no trading)
    and `maintenance` (the exchange, or shard, inactive)."""
    words = f"exchange={_state_word(status.exchange_active, status.trading_active)}"
    shards = sorted(status.exchange_index_statuses or [], key=lambda s: s.exchange_index)
    if shards:
        listed = ",".join(
            f"{s.exchange_index}:{_state_word(s.exchange_active, s.trading_active)}" for s in shards
        )
        words += f" shards={listed}"
    return words


class Poller:
    """Runs in its own thread. `polling` on: passes every interval; off: only reconciliations."""

    def __init__(
        self,
        config: StreamConfig,
        landing: LandingLog,
        stats: EngineStats,
        events: FeedEvents,
        *,
        on_pass: Callable[[PassResult], None] | None = None,
        client_factory: Callable[..., RestClient] = RestClient,
    ) -> None:
        self.config = config
        self.landing = landing
        self.stats = stats
        self.events = events
        self.on_pass = on_pass
        self._client_factory = client_factory
        self._cond = threading.Condition()
        self._polling = False
        self._reconcile_wanted = False
        self._stopping = False
        self._pass_id = 0
        self._stretched = False
        self._retries_in_pass: list[RetryNotice] = []
        self._signed = True
        self._exchange: str | None = None  # the exchange's state as last recorded
        self._status_due = 0.0  # monotonic time of the next GET /exchange/status
        self.thread = threading.Thread(target=self._run, name="kalshi-poller", daemon=True)
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def set_polling(self, on: bool) -> None:
        with self._cond:
            self._polling = on
            self.stats.polling = on
            self._cond.notify_all()

    @property
    def polling(self) -> bool:
        return self._polling

    def request_reconcile(self) -> int:
        """Ask for a pass; returns the id that the reconciling pass will have (or exceed)."""
        with self._cond:
            self._reconcile_wanted = True
            self._cond.notify_all()
            return self._pass_id + 1

    # ------------------------------------------------------------------ loop

    def _run(self) -> None:
        try:
            client = self._new_client()
            next_start = 0.0
            while True:
                with self._cond:
                    while not self._stopping:
                        if self._reconcile_wanted:
                            break
                        now = time.monotonic()
                        if now >= self._status_due:
                            break
                        wait = min(self._status_due, next_start) - now
                        if self._polling and wait <= 0:
                            break
                        self._cond.wait(timeout=wait if self._polling else self._status_due - now)
                    if self._stopping:
                        return
                    status_due = time.monotonic() >= self._status_due
                if status_due:
                    self._check_exchange(client)
                    self._status_due = time.monotonic() + self.config.exchange_status_every_s
                    continue
                with self._cond:
                    purpose = "reconcile" if self._reconcile_wanted else "poll"
                    self._reconcile_wanted = False
                    self._pass_id += 1
                    pass_id = self._pass_id
                started = time.monotonic()
                ok = self._one_pass(client, pass_id, purpose)
                duration = time.monotonic() - started
                interval = self.config.poll_interval_s
                if not ok:
                    client.close()
                    client = self._new_client()
                    interval = max(interval, 5.0)
                elif self._polling:
                    self._note_stretch(duration)
                next_start = started + max(interval, duration)
        except BaseException as exc:  # surfaced by the engine, never silent
            self.error = exc
            log.exception("poller stopped by an unexpected error")
        finally:
            self.stats.polling = False

    def _new_client(self) -> RestClient:
        cfg = self.config
        return self._client_factory(
            cfg.kalshi,
            sign=self._signed,
            requests_per_s=cfg.requests_per_s,
            on_retry=self._retries_in_pass.append,
        )

    def _check_exchange(self, client: RestClient) -> None:
        """Record the exchange's state (`exchange_status`) when it changed: with it, coverage tells
        a quiet market (its shard closed, the exchange in maintenance) from a hole in the data."""
        try:
            status = client.get_exchange_status()
        except (KalshiError, FrameDecodeError, ValueError) as exc:
            log.debug("GET /exchange/status failed: %s", exc)
            return
        state = describe_exchange(status)
        if state != self._exchange:
            self._exchange = state
            self.events.emit("http", "exchange_status", state)

    def _pages(self, client: RestClient) -> Iterator[RawResponse]:
        for filters in scope_requests(self.config.scope):
            yield from client.iter_markets_raw(limit=1000, **filters)

    def _one_pass(self, client: RestClient, pass_id: int, purpose: str) -> bool:
        started_ns = time.time_ns()
        pages = requests = response_bytes = 0
        self._retries_in_pass.clear()
        ok = True
        try:
            for raw in self._pages(client):
                pages += 1
                requests += raw.attempts
                response_bytes += len(raw.body)
                meta = msgspec.json.encode(PageMeta(pass_id=pass_id, page=pages, purpose=purpose))
                self.landing.append(Kind.REST_PAGE, Source.HTTP, meta + b"\n" + raw.body)
                self.landing.flush()
                self.stats.http_pages += 1
                self.stats.http_bytes += len(raw.body)
                self.stats.records_arrived()
                if self._stopping:
                    ok = False
                    break
        except KalshiAuthError as exc:
            ok = False
            self.events.emit(
                "http",
                "auth_failed",
                f"{exc}; market data is public, so polling goes on without a signature",
            )
            self._signed = False
        except (KalshiError, FrameDecodeError, ValueError) as exc:
            ok = False
            self.events.emit("http", "poll_failed", f"pass {pass_id} ({purpose}): {exc}"[:1000])
        self._report_retries(pass_id)
        figures = PassFigures(
            pass_id=pass_id,
            purpose=purpose,
            started_ns=started_ns,
            finished_ns=time.time_ns(),
            pages=pages,
            requests=requests,
            retries=len(self._retries_in_pass),
            response_bytes=response_bytes,
        )
        segment, end = self.landing.append(
            Kind.POLL_PASS, Source.HTTP, msgspec.json.encode(figures)
        )
        if purpose == "reconcile" and ok:
            self.events.emit("http", "reconcile", f"pass {pass_id}: {pages} pages")
        if self.on_pass is not None:
            self.on_pass(PassResult(pass_id, purpose, ok, segment, end))
        return ok

    def _report_retries(self, pass_id: int) -> None:
        if not self._retries_in_pass:
            return
        by_status: dict[str, int] = {}
        for r in self._retries_in_pass:
            key = str(r.status) if r.status else "network"
            by_status[key] = by_status.get(key, 0) + 1
        waited = sum(r.delay_s for r in self._retries_in_pass)
        summary = ", ".join(f"{n}x {k}" for k, n in sorted(by_status.items()))
        kind = "rate_limited" if "429" in by_status else "server_error"
        self.events.emit(
            "http", kind, f"pass {pass_id}: retried {summary}, backed off {waited:.1f}s"
        )

    def _note_stretch(self, duration: float) -> None:
        interval = self.config.poll_interval_s
        stretched = duration > interval
        if stretched and not self._stretched:
            self.events.emit(
                "http",
                "rate_limit_stretch",
                f"a pass took {duration:.2f}s, longer than poll_interval_s={interval}s under the "
                f"{self.config.read_rate_per_s:g} requests/s limit; polling every {duration:.2f}s",
            )
        elif not stretched and self._stretched:
            self.events.emit("http", "rate_limit_fits", f"passes fit in {interval}s again")
        self._stretched = stretched

"""Coverage: when each feed was live, degraded or down, and why, derived from what the stream
recorded (`feed_events`, with `ticks` and `poll_passes` for the last sign of life of an engine
that died), including the time when no engine ran at all.

The model, per source (`websocket`, `http`) and channel (`ticker`; the order-book and trade
channels below):

- `websocket` has rows while an engine runs in `websocket` or `both` mode. It is `live` while the
  socket is subscribed; `degraded` while it is down but HTTP polling covers the market data
  (fallback polling in `websocket` mode, the regular polling of `both` mode) and while the
  reconciliation pass after a reconnect is not yet stored; `down` otherwise.
- `http` has rows while polling runs: always in `http` and `both` mode, and in `websocket` mode
  only during a fallback (outside it, the REST passes only reconcile and are not a feed). It is
  `live` while passes run within the interval and `degraded` (`rate_limit`) while answered 429
  or stretched beyond `poll_interval_s`.
- With no engine running, every source the last engine used is `down`: `no_run` after a clean
  stop, `crash` from the last sign of life of an engine that never stopped (its last feed event,
  tick or polling pass) until the next start, `handover` when a predecessor stopped before its
  successor was live. The next engine's start-up (until its socket is subscribed) keeps that
  reason.
- A handover overlaps two engines: the successor's start says `successor_of=`, and the
  predecessor's `stop` "handed over to ..." ends only its part, so a handover done right leaves no
  gap. Events carry no engine id, so in the overlap a failed connection attempt or a fallback is
  the successor's (the predecessor is subscribed). `run_id` is that of the engine owning the
  warehouse (its start's `label=run <id>`); a handover opens a new interval for the successor.

The exchange itself has rows too (source `exchange`, channel `all` or `shard <n>`), from the
`exchange_status` events the poller records when `GET /exchange/status` changes: `down` with
reason `maintenance` (the exchange, or a shard, inactive) or `exchange_closed` (no trading), so a
quiet market can be told from a hole in the data. They are not a feed: a gap of the feeds while
the whole exchange was in maintenance or closed takes that reason.

The order-book and trade channels of the WebSocket feed have rows of their own (source
`websocket`, channel `orderbook_delta` or `trade`), from the feed's sequence checks: `degraded`
with reason `sequence_gap` from each `sequence_gap` event (frames lost, duplicated or out of order
on a subscription, or lost when the exchange ended the subscription: error 25, a buffer overflow)
until its `book_resynced` (every market of the sid has a fresh snapshot), for trades until the
gap's REST backfill (`trades_backfilled` or `backfill_failed`), or until the socket goes down or
is subscribed anew, or the engine stops. The detail names the seq range and the markets. Outside
those rows those channels are as live as the socket (the `ticker` rows).

"Covered" is the union: a moment is covered when at least one source is live or degraded. A gap
is a stretch with every source down. It is reckoned on the `ticker` rows: the order-book and
trade rows qualify data the socket delivered, they do not stand in for it.

The table is rebuilt by `build_feed_coverage()` in one statement (`CREATE OR REPLACE TABLE ...`),
which runs whole on the warehouse's owner when one is serving.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from kalshi_pipeline.warehouse import server
from kalshi_pipeline.warehouse.client import sql_literal

TABLE = "feed_coverage"
COLUMNS = ["source", "channel", "state", "reason", "started_at", "ended_at", "run_id", "detail"]
COLUMN_TYPES = {
    "source": "VARCHAR",
    "channel": "VARCHAR",
    "state": "VARCHAR",
    "reason": "VARCHAR",
    "started_at": "TIMESTAMPTZ",
    "ended_at": "TIMESTAMPTZ",
    "run_id": "VARCHAR",
    "detail": "VARCHAR",
}
SOURCES = ("websocket", "http")
CHANNEL = "ticker"
STATES = ("live", "degraded", "down")
REASONS = (
    "disconnect",
    "silence",
    "refused",
    "rate_limit",
    "handover",
    "crash",
    "no_run",
    "maintenance",
    "exchange_closed",
    "sequence_gap",
)
SEQUENCED_CHANNELS = ("orderbook_delta", "trade")
EXCHANGE = "exchange"  # the source of the exchange's own rows
_EXCHANGE_WORDS = {"maintenance": "maintenance", "closed": "exchange_closed"}
TABLE_HOURS = 48  # how far back the table reaches

LIVE, DEGRADED, DOWN = STATES
_WS_FAILURES = {
    "disconnect": "disconnect",
    "silence": "silence",
    "connect_failed": "refused",
    "auth_failed": "refused",
    "subscribe_failed": "refused",
}
_HANDED_OVER = "handed over to"
_SUPERSEDED = "superseded by"
# An engine start is a handover's successor when its detail says so (`successor_of=pid N`), or
# when one of these follows before the next start.
_HANDOVER_KINDS = {"handover_requested", "handover", "handover_failed"}
_MODE = re.compile(r"\bmode=(\w+)")
_RUN_ID = re.compile(r"\b(?:run_id=|label=run )([\w-]+)")
_BACKED_OFF = re.compile(r"backed off ([0-9.]+)s")
# the feed's `sequence_gap` and `book_resynced` details (stream/wsfeed.py writes them)
# a `sequence_gap` event's detail: channel, sid, expected, received, kind, markets
SEQUENCE_GAP = re.compile(
    r"^(orderbook_delta|trade) sid (\d+): seq (\d+) expected, (\d+) received"
    r"(?: \((duplicate|backward)\))?; markets: (.*)$",
    re.S,
)
# the same groups, of a subscription the exchange ended (error 25 or 10: stream/sequence.py
# ENDED): every frame from `expected` on was lost; `received` is "none" unless the error frame
# carried a seq
ENDED_GAP = re.compile(
    r"^(orderbook_delta|trade) sid (\d+): seq (\d+) expected, (\d+|none) received"
    r" \((buffer overflow|channel error)\); markets: (.*)$",
    re.S,
)
_ENDED = {"buffer overflow", "channel error"}
_SID_PREFIX = re.compile(r"^(orderbook_delta|trade) sid (\d+):")
_SEQ_ENDS = {"disconnect", "silence", "subscribe"}  # the socket's sids are gone or new
_BACKFILLED = {"trades_backfilled", "backfill_failed"}


@dataclass(frozen=True)
class Event:
    at: datetime
    source: str
    kind: str
    detail: str


@dataclass
class Interval:
    source: str
    state: str
    reason: str | None
    started_at: datetime
    ended_at: datetime | None
    run_id: str | None = None
    detail: str = ""
    channel: str = CHANNEL

    def row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}

    def seconds(self, start: datetime, end: datetime) -> float:
        """Seconds of this interval inside [start, end) (an open one runs to `end`)."""
        lo = max(self.started_at, start)
        hi = min(self.ended_at or end, end)
        return max(0.0, (hi - lo).total_seconds())


# --------------------------------------------------------------------------- the fold


@dataclass
class _Engine:
    mode: str
    started_at: datetime
    run_id: str | None
    subscribed: bool = False  # its socket subscribed since it started
    requested: bool = False  # live, it asked its predecessor to hand over


def _sources_of(mode: str) -> set[str]:
    return {"websocket": {"websocket"}, "http": {"http"}, "both": {"websocket", "http"}}.get(
        mode, {"websocket"}
    )


@dataclass
class _Fold:
    """Walks the events in order, keeping the feed's state and writing an interval per change."""

    last_record: Callable[[datetime, datetime], datetime | None]
    running: list[_Engine] = field(default_factory=list)
    last_sources: set[str] = field(default_factory=set)  # what the last engine(s) streamed
    gap_reason: str = "no_run"
    gap_detail: str = "no engine ran"
    ws_up: bool = False
    ws_reason: str | None = None  # why the socket went down while an engine ran
    ws_detail: str = ""
    reconciling: bool = False
    fallback: bool = False
    stretched: bool = False
    rate_limited: int = 0
    failed_successors: int = 0  # successors that gave up and whose own stop is still to come
    last_event_at: datetime | None = None
    open: dict[str, Interval] = field(default_factory=dict)
    out: list[Interval] = field(default_factory=list)

    # --------------------------------------------------------------- state per source

    def _run_id(self) -> str | None:
        """The run of the engine that owns the warehouse (the oldest one running)."""
        return self.running[0].run_id if self.running else None

    def _used(self) -> set[str]:
        used: set[str] = set()
        for engine in self.running:
            used |= _sources_of(engine.mode)
        if self.fallback and self.running:
            used.add("http")
        return used

    def _polling(self) -> bool:
        return "http" in self._used()

    def state_of(self, source: str) -> tuple[str, str | None, str] | None:
        if not self.running:
            if source in self.last_sources:
                return DOWN, self.gap_reason, self.gap_detail
            return None
        if source not in self._used():
            return None
        if source == "http":
            if self.stretched or self.rate_limited:
                return DEGRADED, "rate_limit", "polling answered 429 or stretched"
            return LIVE, None, ""
        if self.ws_up:
            if self.reconciling:
                return DEGRADED, self.ws_reason, "reconciling after the socket came back"
            return LIVE, None, ""
        reason = self.ws_reason or self.gap_reason
        detail = self.ws_detail if self.ws_reason else self.gap_detail
        return (DEGRADED if self._polling() else DOWN), reason, detail

    def settle(self, at: datetime) -> None:
        """Close and open intervals so each source's open one matches the state now."""
        for source in SOURCES:
            now = self.state_of(source)
            current = self.open.get(source)
            same = current is not None and now is not None
            key = (*now[:2], self._run_id()) if now is not None else None
            if same and (current.state, current.reason, current.run_id) == key:  # type: ignore[union-attr]
                continue
            if current is not None:
                current.ended_at = at
                if current.ended_at > current.started_at:
                    self.out.append(current)
                del self.open[source]
            if now is not None:
                state, reason, detail = now
                self.open[source] = Interval(
                    source, state, reason, at, None, self._run_id(), detail[:500]
                )

    # --------------------------------------------------------------- events

    def crash(self, next_start: datetime | None) -> None:
        """The running engines died without a stop: down from their last sign of life."""
        # its last record is no earlier than its last event: only ticks after it are read
        since = max(self.running[0].started_at, self.last_event_at or self.running[0].started_at)
        seen = self.last_record(since, next_start or datetime(9999, 1, 1, tzinfo=UTC))
        when = max(t for t in (seen, self.last_event_at, since) if t is not None)
        if next_start is not None:
            when = min(when, next_start)
        self.last_sources = self._used()
        self.running.clear()
        self.gap_reason, self.gap_detail = "crash", "the engine stopped without a stop event"
        self._reset_feed()
        self.settle(when)

    def _reset_feed(self) -> None:
        self.ws_up = self.reconciling = self.fallback = self.stretched = False
        self.ws_reason, self.ws_detail = None, ""
        self.rate_limited = 0

    def apply(self, e: Event, successor: bool) -> None:
        if e.source == "engine":
            self._engine(e, successor)
        elif e.source == "websocket":
            self._websocket(e)
        elif e.source == "http":
            self._http(e)
        self.last_event_at = e.at
        self.settle(e.at)

    def _engine(self, e: Event, successor: bool) -> None:
        if e.kind == "start":
            if self.running and not successor:
                self.crash(e.at)
            mode = _MODE.search(e.detail)
            run = _RUN_ID.search(e.detail)
            if not self.running:
                self._reset_feed()
            self.running.append(
                _Engine(mode.group(1) if mode else "websocket", e.at, run.group(1) if run else None)
            )
        elif e.kind == "stop" and self.running:
            used = self._used()
            if e.detail.startswith(_HANDED_OVER):
                self.running.pop(0)  # the predecessor, and its fallback with it
                self.fallback = self.stretched = False
                successor_ws = self.running and self.running[-1].subscribed
                if not self.running:
                    self.last_sources = used
                    self.gap_reason, self.gap_detail = "handover", e.detail
                    self._reset_feed()
                elif not successor_ws:
                    self.ws_up = False
                    self.ws_reason, self.ws_detail = "handover", e.detail
            elif e.detail.startswith(_SUPERSEDED) and len(self.running) > 1:
                self.running.pop(-2)  # a successor overtaken by a newer one
            elif self.failed_successors:
                self.failed_successors -= 1  # the stop of a successor that gave up
            elif len(self.running) > 1 and self.running[-1].requested:
                # the predecessor ended otherwise (terminated) while its successor was live
                self.running.pop(0)
                self.fallback = self.stretched = False
            else:
                self.running.pop()
                if not self.running:
                    self.last_sources = used
                    self.gap_reason, self.gap_detail = "no_run", f"stopped: {e.detail}"
                    self._reset_feed()
        elif e.kind == "fallback_start":
            # in a handover's overlap with the predecessor subscribed, it is the successor's
            if not (len(self.running) > 1 and self.ws_up):
                self.fallback = True
        elif e.kind == "fallback_end":
            self.fallback = False
            self.stretched = False
        elif e.kind == "handover_requested" and self.running:
            self.running[-1].requested = True
        elif e.kind == "handover":
            del self.running[:-1]  # the successor owns the warehouse: its predecessors are gone
        elif e.kind == "handover_failed" and len(self.running) > 1:
            self.running.pop()  # the successor gave up; the predecessor kept streaming
            self.failed_successors += 1

    def _websocket(self, e: Event) -> None:
        if e.kind == "subscribe":
            was_down = not self.ws_up and self.ws_reason is not None
            self.ws_up = True
            if self.running:
                self.running[-1].subscribed = True
            if was_down and self.ws_reason != "handover":
                self.reconciling = True
            else:
                self.ws_reason, self.ws_detail = None, ""
        elif e.kind in _WS_FAILURES:
            # A handover's overlap: events carry no engine id. A failed attempt is the
            # successor's (the predecessor is subscribed, not connecting); a lost connection
            # while both were subscribed leaves the other one.
            overlap = len(self.running) > 1
            if overlap and (e.kind not in ("disconnect", "silence") or self.running[-1].subscribed):
                return
            if self.ws_up or self.ws_reason is None or e.kind in ("disconnect", "silence"):
                self.ws_reason, self.ws_detail = _WS_FAILURES[e.kind], e.detail
            self.ws_up = False
            self.reconciling = False

    def _http(self, e: Event) -> None:
        if e.kind in ("reconcile", "poll_failed") and self.reconciling:
            self.reconciling = False
            self.ws_reason, self.ws_detail = None, ""
        elif e.kind == "rate_limit_stretch":
            self.stretched = True
        elif e.kind == "rate_limit_fits":
            self.stretched = False
        elif e.kind == "_rate_limited_from":
            self.rate_limited += 1
        elif e.kind == "_rate_limited_until":
            self.rate_limited = max(0, self.rate_limited - 1)


def _with_backoffs(events: Iterable[Event]) -> list[Event]:
    """A `rate_limited` event is written after the pass it summarizes: its backoff becomes a
    stretch [event - backed off, event] of degraded polling."""
    out: list[Event] = []
    for e in events:
        out.append(e)
        if e.source == "http" and e.kind == "rate_limited":
            m = _BACKED_OFF.search(e.detail)
            waited = float(m.group(1)) if m else 0.0
            if waited > 0:
                began = e.at - timedelta(seconds=waited)
                out.append(Event(began, "http", "_rate_limited_from", ""))
                out.append(Event(e.at, "http", "_rate_limited_until", ""))
    return sorted(out, key=lambda e: e.at)


def _successor_starts(events: Sequence[Event]) -> set[int]:
    """Indexes of engine starts that begin a handover (the engine started while another one
    owned the warehouse): the start says `successor_of=`, or a handover event or a predecessor's
    'handed over to' / 'superseded by' stop follows before the next start. Any other start
    while an engine runs means that engine died (a crash)."""
    starts = [i for i, e in enumerate(events) if e.source == "engine" and e.kind == "start"]
    out: set[int] = set()
    for n, i in enumerate(starts):
        if "successor_of=" in events[i].detail:
            out.add(i)
            continue
        end = starts[n + 1] if n + 1 < len(starts) else len(events)
        for e in events[i + 1 : end]:
            if e.source == "engine" and (
                e.kind in _HANDOVER_KINDS
                or (e.kind == "stop" and e.detail.startswith((_HANDED_OVER, _SUPERSEDED)))
            ):
                out.add(i)
                break
    return out


def intervals_from(
    events: Sequence[Event],
    last_record: Callable[[datetime, datetime], datetime | None],
    *,
    stream_alive: bool,
    now: datetime,
) -> list[Interval]:
    """The coverage intervals, oldest first, from feed events in time order.

    `last_record(since, before)`: the newest tick or polling pass stored in [since, before), to
    date a crash. `stream_alive`: an engine serves the warehouse now; when none does and the
    newest engine never stopped, it died, and coverage is down (`crash`) from its last record.
    """
    ordered = _with_backoffs(events)
    successors = _successor_starts(ordered)
    fold = _Fold(last_record)
    for i, e in enumerate(ordered):
        fold.apply(e, i in successors)
    if fold.running and not stream_alive:
        fold.crash(None)
    out = list(fold.out)
    out.extend(fold.open.values())
    out.extend(exchange_intervals(ordered, stream_alive=stream_alive))
    out.extend(sequence_gap_intervals(ordered, stream_alive=stream_alive))
    return sorted(out, key=lambda iv: (iv.started_at, iv.source))


def _gap_words(m: re.Match[str]) -> str:
    expected, kind = int(m.group(3)), m.group(5)
    if kind in _ENDED:
        return f"seq {expected} on lost (subscription ended: {kind})"
    received = int(m.group(4))
    if kind:
        return f"seq {received} {kind} (expected {expected})"
    lost = f"seq {expected}" if received - 1 == expected else f"seq {expected}-{received - 1}"
    return f"{lost} lost"


class _OpenIntervals:
    """Intervals opened by key and closed at a time; one that closes where it opened is dropped
    (nothing happened in between)."""

    def __init__(self) -> None:
        self.open: dict[Any, Interval] = {}
        self.closed: list[Interval] = []

    def close(self, key: Any, at: datetime) -> None:
        iv = self.open.pop(key)
        iv.ended_at = at
        if iv.ended_at > iv.started_at:
            self.closed.append(iv)

    def close_all(self, at: datetime) -> None:
        for key in list(self.open):
            self.close(key, at)

    def result(self, last_at: datetime | None, *, stream_alive: bool) -> list[Interval]:
        """Every interval; the open ones end at `last_at` unless the stream is alive."""
        if not stream_alive and last_at is not None:
            self.close_all(last_at)
        return self.closed + list(self.open.values())


def sequence_gap_intervals(events: Sequence[Event], *, stream_alive: bool) -> list[Interval]:
    """`degraded` (`sequence_gap`) rows of the order-book and trade channels: from each
    `sequence_gap` until the sid's `book_resynced` (a trade gap: its backfill), a resubscription
    of the sid, the socket going down or subscribing anew, or the engine stopping. A gap where
    the exchange ended the subscription (error 25 or 10) is followed by that resubscription: it
    lasts until the `book_resynced` of the old sid (its markets' fresh snapshots on the new one)."""
    intervals = _OpenIntervals()
    open_, close = intervals.open, intervals.close
    ended: set[tuple[str, int]] = set()  # open rows of a subscription the exchange ended
    run_id: str | None = None
    last_at: datetime | None = None
    for e in events:
        last_at = e.at
        if e.source == "engine":
            if e.kind == "start":
                run = _RUN_ID.search(e.detail)
                run_id = run.group(1) if run else None
            elif e.kind == "stop":
                intervals.close_all(e.at)
                ended.clear()
            continue
        if e.kind in _BACKFILLED:  # the backfill's events (source http, or websocket)
            for key in [k for k in open_ if k[0] == "trade"]:
                close(key, e.at)
                ended.discard(key)
            continue
        if e.source != "websocket":
            continue
        if e.kind in _SEQ_ENDS:
            intervals.close_all(e.at)
            ended.clear()
        elif e.kind == "sequence_gap":
            m = SEQUENCE_GAP.match(e.detail) or ENDED_GAP.match(e.detail)
            if m is None:
                continue
            key = (m.group(1), int(m.group(2)))
            if m.group(5) in _ENDED:
                ended.add(key)
            words = f"{_gap_words(m)}; markets: {m.group(6)}"
            iv = open_.get(key)
            if iv is None:
                open_[key] = Interval(
                    "websocket",
                    DEGRADED,
                    "sequence_gap",
                    e.at,
                    None,
                    run_id,
                    f"sid {key[1]}: {words}"[:500],
                    channel=key[0],
                )
            elif len(iv.detail) < 500:
                iv.detail = f"{iv.detail} | {words}"[:500]
        elif e.kind in ("book_resynced", "resubscribe"):
            m = _SID_PREFIX.match(e.detail)
            key = (m.group(1), int(m.group(2))) if m is not None else None
            if key in open_ and not (e.kind == "resubscribe" and key in ended):
                close(key, e.at)
                ended.discard(key)
    return intervals.result(last_at, stream_alive=stream_alive)


def _exchange_states(detail: str) -> dict[str, str]:
    """`exchange=open shards=1:open,2:closed` -> {"all": "open", "shard 1": "open", ...}."""
    states: dict[str, str] = {}
    for part in detail.split():
        key, _, value = part.partition("=")
        if key == "exchange":
            states["all"] = value
        elif key == "shards":
            for item in value.split(","):
                index, _, word = item.partition(":")
                if index and word:
                    states[f"shard {index}"] = word
    return states


def exchange_intervals(events: Sequence[Event], *, stream_alive: bool) -> list[Interval]:
    """The exchange's own `down` rows: while it, or a shard, was closed or in maintenance, as
    the stream last saw it. Known only while an engine runs: a clean stop or the last event of
    an engine that died ends them."""
    intervals = _OpenIntervals()
    open_, close = intervals.open, intervals.close
    last_at: datetime | None = None
    for e in events:
        last_at = e.at
        if e.source == "engine" and e.kind == "stop":
            if not e.detail.startswith((_HANDED_OVER, _SUPERSEDED)):
                intervals.close_all(e.at)
            continue
        if not (e.source == "http" and e.kind == "exchange_status"):
            continue
        states = _exchange_states(e.detail)
        for key in list(open_):
            if _EXCHANGE_WORDS.get(states.get(key, "open")) != open_[key].reason:
                close(key, e.at)
        for key, word in states.items():
            reason = _EXCHANGE_WORDS.get(word)
            if reason is not None and key not in open_:
                open_[key] = Interval(
                    EXCHANGE, DOWN, reason, e.at, None, None, f"{key}: {word}", channel=key
                )
    return intervals.result(last_at, stream_alive=stream_alive)


# --------------------------------------------------------------------------- the warehouse


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]
    ).fetchone()
    return bool(row and row[0])


def _at(epoch_us: Any) -> datetime:
    return datetime.fromtimestamp(int(epoch_us) / 1e6, UTC)


# From the second-newest engine start at or before the window on: the newest may be a
# handover's successor, whose predecessor's start the fold needs too.
EVENTS_SQL = """
SELECT epoch_us(occurred_at), source, kind, detail FROM feed_events
WHERE source IN ('engine', 'websocket', 'http')
  AND occurred_at >= coalesce(
        (SELECT occurred_at FROM feed_events
         WHERE source = 'engine' AND kind = 'start' AND occurred_at <= ?
         ORDER BY occurred_at DESC LIMIT 1 OFFSET 1),
        TIMESTAMPTZ '1970-01-01 00:00:00+00')
ORDER BY occurred_at, rowid
"""

LAST_RECORD_SQL = """
SELECT greatest(
    (SELECT max(epoch_us(received_at)) FROM ticks WHERE received_at >= ? AND received_at < ?),
    (SELECT max(epoch_us(finished_at)) FROM poll_passes WHERE finished_at >= ? AND finished_at < ?))
"""


def read_events(con: duckdb.DuckDBPyConnection, since: datetime) -> list[Event]:
    """Feed events from the engine starts before `since` on (the state at `since` depends on
    them)."""
    if not _has_table(con, "feed_events"):
        return []
    return [
        Event(_at(r[0]), str(r[1]), str(r[2]), str(r[3]))
        for r in con.execute(EVENTS_SQL, [since]).fetchall()
    ]


def _last_record(con: duckdb.DuckDBPyConnection) -> Callable[[datetime, datetime], datetime | None]:
    have = _has_table(con, "ticks_stored") and _has_table(con, "poll_passes")

    def last(since: datetime, before: datetime) -> datetime | None:
        if not have:
            return None
        before = min(before, datetime(9999, 1, 1, tzinfo=UTC))
        row = con.execute(LAST_RECORD_SQL, [since, before, since, before]).fetchone()
        return None if not row or row[0] is None else _at(row[0])

    return last


def coverage_intervals(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    stream_alive: bool,
    now: datetime | None = None,
) -> list[Interval]:
    """Intervals overlapping [since, now], clipped to start no earlier than `since`."""
    now = now or datetime.now(UTC)
    events = read_events(con, since)
    out = []
    for iv in intervals_from(events, _last_record(con), stream_alive=stream_alive, now=now):
        if iv.ended_at is not None and iv.ended_at <= since:
            continue
        if iv.started_at < since:
            iv.started_at = since
        out.append(iv)
    return out


def table_sql(intervals: Iterable[Interval]) -> str:
    """One `CREATE OR REPLACE TABLE feed_coverage` statement holding these intervals."""
    typed = ", ".join(f"CAST({c} AS {COLUMN_TYPES[c]}) AS {c}" for c in COLUMNS)
    body = ["(" + ", ".join(sql_literal(iv.row()[c]) for c in COLUMNS) + ")" for iv in intervals]
    if not body:
        cols = ", ".join(f"{c} {COLUMN_TYPES[c]}" for c in COLUMNS)
        return f"CREATE OR REPLACE TABLE {TABLE} ({cols})"
    return (
        f"CREATE OR REPLACE TABLE {TABLE} AS SELECT {typed} FROM (VALUES {', '.join(body)}) "
        f"t({', '.join(COLUMNS)}) ORDER BY started_at, source"
    )


def build_feed_coverage(
    con: duckdb.DuckDBPyConnection,
    *,
    stream_alive: bool,
    hours: int = TABLE_HOURS,
    now: datetime | None = None,
) -> list[Interval]:
    """Rebuild `feed_coverage` for the last `hours`, in one statement; returns its intervals."""
    now = now or datetime.now(UTC)
    intervals = coverage_intervals(
        con, since=now - timedelta(hours=hours), stream_alive=stream_alive, now=now
    )
    con.execute(table_sql(intervals))
    return intervals


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class Gap:
    started_at: datetime
    ended_at: datetime | None  # None: still open
    sources: tuple[str, ...]
    reason: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.started_at.isoformat(timespec="seconds"),
            "end": self.ended_at.isoformat(timespec="seconds") if self.ended_at else None,
            "sources": ", ".join(self.sources),
            "reason": self.reason,
            "seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True)
class Coverage:
    """Coverage over one window: `covered` is None when nothing was recorded in it."""

    start: datetime
    end: datetime
    known_s: float  # seconds of the window the records speak about
    covered: float | None  # fraction of known_s with some source live or degraded
    live: dict[str, float]  # per source: fraction of known_s live
    down_s: dict[str, float]  # seconds in gaps, per reason
    gaps: list[Gap]

    @property
    def longest(self) -> Gap | None:
        return max(self.gaps, key=lambda g: g.seconds, default=None)

    def headline(self, window: str) -> str:
        """One sentence on how complete the data is, e.g. "The market data was covered
        99.6 % of the last 24 h (the WebSocket feed live 98.1 %); 2 gaps, longest 41 s
        (disconnect)." `window` names the window in words ("24 h")."""
        if self.covered is None:
            return f"No feed was recorded in the last {window}, so its coverage is unknown."
        return f"The market data was covered {self.line(f'of the last {window}')}."

    def line(self, window: str = "") -> str:
        """The figures in short: "99.6 % <window> (the WebSocket feed live 98.1 %); 2 gaps,
        longest 41 s (disconnect)", with how much of the window was recorded when not all."""
        if self.covered is None:
            return "unknown: no feed recorded in this window"
        whole = (self.end - self.start).total_seconds()
        notes = [] if self.known_s >= whole - 1 else [f"{_duration(self.known_s)} recorded"]
        notes += [
            f"{_NAMES[s]} live {_percent(self.live[s])}"
            for s in SOURCES
            if self.live.get(s, 0.0) > 0
        ]
        said = f" ({'; '.join(notes)})" if notes else ""
        longest = self.longest
        if longest is None:
            tail = "no gap"
        else:
            n = len(self.gaps)
            tail = (
                f"{n} gap{'s' if n > 1 else ''}, longest {_duration(longest.seconds)} "
                f"({longest.reason}{', still open' if longest.ended_at is None else ''})"
            )
        where = f" {window}" if window else ""
        return f"{_percent(self.covered)}{where}{said}; {tail}"


_NAMES = {"websocket": "the WebSocket feed", "http": "polling"}


def _percent(fraction: float) -> str:
    """Rounded down, so 99.96 % with a gap never reads as 100 %."""
    if fraction >= 1.0:
        return "100 %"
    return f"{math.floor(fraction * 1000) / 10:.1f} %"


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def summarize(intervals: Sequence[Interval], start: datetime, end: datetime) -> Coverage:
    """Coverage of [start, end): the union of sources, the live share per source, the gaps."""
    exchange = [
        iv
        for iv in intervals
        if iv.source == EXCHANGE and iv.channel == "all" and iv.seconds(start, end) > 0
    ]
    inside = [
        iv
        for iv in intervals
        if iv.source in SOURCES and iv.channel == CHANNEL and iv.seconds(start, end) > 0
    ]
    if not inside:
        return Coverage(start, end, 0.0, None, {}, {}, [])
    known_from = max(start, min(iv.started_at for iv in inside))
    cuts = sorted(
        {known_from, end}
        | {
            t
            for iv in [*inside, *exchange]
            for t in (iv.started_at, iv.ended_at)
            if t and known_from < t < end
        }
    )
    covered = 0.0
    live = dict.fromkeys(SOURCES, 0.0)
    down: dict[str, float] = {}
    gaps: list[Gap] = []
    for lo, hi in itertools.pairwise(cuts):
        here = [iv for iv in inside if iv.started_at <= lo and (iv.ended_at or end) >= hi]
        span = (hi - lo).total_seconds()
        for iv in here:
            if iv.state == LIVE:
                live[iv.source] += span
        if any(iv.state in (LIVE, DEGRADED) for iv in here):
            covered += span
            continue
        downs = sorted(here, key=lambda iv: SOURCES.index(iv.source))
        closed = [iv for iv in exchange if iv.started_at <= lo and (iv.ended_at or end) >= hi]
        reason = next((iv.reason for iv in [*closed, *downs] if iv.reason), "no_run")
        down[reason] = down.get(reason, 0.0) + span
        sources = tuple(iv.source for iv in downs)
        last = gaps[-1] if gaps else None
        if last and last.ended_at == lo and last.reason == reason:
            gaps[-1] = Gap(last.started_at, hi, last.sources, reason, last.seconds + span)
        else:
            gaps.append(Gap(lo, hi, sources, reason, span))
    open_end = [g for g in gaps if g.ended_at == end]
    if open_end and any(iv.ended_at is None for iv in inside if iv.state == DOWN):
        g = open_end[0]
        gaps[gaps.index(g)] = Gap(g.started_at, None, g.sources, g.reason, g.seconds)
    known = (end - known_from).total_seconds()
    return Coverage(
        start,
        end,
        known,
        covered / known if known > 0 else None,
        {s: v / known for s, v in live.items() if known > 0},
        down,
        gaps,
    )


def coverage_over(
    con: duckdb.DuckDBPyConnection,
    seconds: float,
    *,
    stream_alive: bool,
    now: datetime | None = None,
) -> Coverage:
    """Coverage of the last `seconds`, computed on the fly (no table needed)."""
    now = now or datetime.now(UTC)
    start = now - timedelta(seconds=seconds)
    intervals = coverage_intervals(con, since=start, stream_alive=stream_alive, now=now)
    return summarize(intervals, start, now)


def stream_serving(database: Path) -> bool:
    """An engine owns and serves this database now (so its newest engine is alive)."""
    return server.live_endpoint(Path(database)) is not None

"""Books check: record full order books and trades with dropped frames, then prove the record.

The simulator runs `books_check_markets` markets with real books; the engine streams the
`ticker`, `orderbook_delta` and `trade` channels for `books_check_s`, keeping its landing log,
while the simulator drops one order-book or trade frame every `books_check_drop_every_s` (each
still takes its seq, so the recorder sees a gap). Then the simulator's book ledger, its own record
of every book change and trade, is the truth the warehouse is held to:

- books: at `books_check_times` random moments, a random market's book rebuilt from the warehouse
  (`book_at`) equals the ledger's book at that moment, level for level, wherever the warehouse
  says the book is valid; a moment where it says invalid must fall inside a recorded gap
  (a `sequence_gap` coverage row), and is drawn again;
- gaps: every frame the simulator dropped shows as a `sequence_gap` coverage row on its channel
  naming its seq;
- trades: the warehouse holds exactly the trades the ledger has from the first trade the
  recorder received on (whatever the socket lost, the REST backfill filled);
- replay: the landing log replayed into a fresh database gives the same books and trades.

Moments are taken where the ledger shows no change of that market for a while around them, so
the time a frame spends between the simulator and the warehouse never decides the outcome.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from kalshi_pipeline.bench.context import Context
from kalshi_pipeline.stream.replay import replay
from kalshi_pipeline.warehouse import Warehouse, books
from kalshi_pipeline.warehouse.coverage import (
    ENDED_GAP,
    SEQUENCE_GAP,
    coverage_intervals,
    read_events,
)
from kalshi_pipeline.warehouse.paths import landing_folder
from kalshi_pipeline.warehouse.replayed import differences

CHANNELS = ("ticker", "orderbook_delta", "trade")
DROPPED_CHANNELS = ("orderbook_delta", "trade")
QUIET_BEFORE_MS = 3_000  # no change of the market in the ledger this long before a moment ...
QUIET_AFTER_MS = 1_000  # ... nor this long after it
DRAWS_PER_MOMENT = 200  # tries to find a quiet market at a random moment
COMPARED_TABLES = {
    # the columns a replay must reproduce (when a row was stored is not one of them)
    "book_snapshots": "market_ticker, sid, seq, received_at, landing_segment, landing_offset",
    "book_deltas": "market_ticker, sid, seq, side, price, delta, exchange_ts, received_at",
    "trades": "trade_id, market_ticker, source, yes_price, count, taker_side, exchange_ts",
}

Side = dict[Decimal, Decimal]  # price -> size


@dataclass
class LedgerBook:
    yes: Side = field(default_factory=dict)
    no: Side = field(default_factory=dict)

    def levels(self, side: str) -> list[tuple[Decimal, Decimal]]:
        return sorted(getattr(self, side).items(), reverse=True)


@dataclass
class Ledger:
    """The simulator's book ledger: the exchange's own history of books and trades."""

    changes: list[tuple[int, str, dict[str, Any]]]  # (emitted_at_ms, type, msg), in order
    times: dict[str, list[int]]  # market -> when its book changed
    trades: dict[str, int]  # trade_id -> emitted_at_ms
    dropped: list[dict[str, Any]]

    @classmethod
    def read(cls, path: Path) -> Ledger:
        changes: list[tuple[int, str, dict[str, Any]]] = []
        times: dict[str, list[int]] = {}
        trades: dict[str, int] = {}
        dropped: list[dict[str, Any]] = []
        for raw in path.read_text().splitlines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            kind, at = line["type"], int(line["emitted_at_ms"])
            if kind == "dropped":
                dropped.append(line)
            elif kind == "trade":
                trades[line["msg"]["trade_id"]] = at
            elif kind in ("orderbook_snapshot", "orderbook_delta") and "conn_id" not in line:
                ticker = line["msg"]["market_ticker"]
                changes.append((at, kind, line["msg"]))
                times.setdefault(ticker, []).append(at)
        return cls(changes, times, trades, dropped)

    def book_at(self, ticker: str, at_ms: int) -> LedgerBook:
        """The book of `ticker` after every change emitted at or before `at_ms`."""
        book = LedgerBook()
        for emitted, kind, msg in self.changes:
            if emitted > at_ms:
                break
            if msg["market_ticker"] != ticker:
                continue
            if kind == "orderbook_snapshot":
                book = LedgerBook(
                    {Decimal(p): Decimal(n) for p, n in msg.get("yes_dollars_fp") or []},
                    {Decimal(p): Decimal(n) for p, n in msg.get("no_dollars_fp") or []},
                )
            else:
                side = getattr(book, msg["side"])
                price = Decimal(msg["price_dollars"])
                size = side.get(price, Decimal(0)) + Decimal(msg["delta_fp"])
                if size:
                    side[price] = size
                else:
                    side.pop(price, None)
        return book

    def quiet(self, ticker: str, at_ms: int) -> bool:
        return not any(
            at_ms - QUIET_BEFORE_MS <= t <= at_ms + QUIET_AFTER_MS for t in self.times[ticker]
        )


@dataclass
class Moment:
    market: str
    at_ms: int
    equal: bool
    stored: dict[str, list[tuple[str, str]]]
    ledger: dict[str, list[tuple[str, str]]]


def _levels(pairs: Iterable[tuple[Decimal, Decimal]]) -> list[tuple[str, str]]:
    return [(f"{p.normalize():f}", f"{n.normalize():f}") for p, n in pairs]


def _gap_rows(con: Any, since: datetime) -> list[tuple[str, datetime, datetime | None, str]]:
    """The `sequence_gap` intervals of coverage (what `feed_coverage` holds), since `since`."""
    return [
        (iv.channel, iv.started_at, iv.ended_at, iv.detail)
        for iv in coverage_intervals(con, since=since, stream_alive=False)
        if iv.reason == "sequence_gap"
    ]


def _in_gap(gaps: list[tuple[str, datetime, datetime | None, str]], at: datetime) -> bool:
    return any(
        ch == "orderbook_delta" and lo <= at and (hi is None or at <= hi) for ch, lo, hi, _ in gaps
    )


def _names_seq(detail: str, channel: str, sid: int, seq: int) -> bool:
    """A `sequence_gap` feed event ("<channel> sid S: seq E expected, G received; ...") names
    the lost frame (channel, sid, seq) when E <= seq < G; one of a subscription the exchange
    ended ("... expected, none received (buffer overflow); ...") names every seq from E on."""
    m = SEQUENCE_GAP.match(detail)
    if m:
        return (m.group(1), int(m.group(2))) == (channel, sid) and (
            int(m.group(3)) <= seq < int(m.group(4))
        )
    m = ENDED_GAP.match(detail)
    return bool(m and (m.group(1), int(m.group(2))) == (channel, sid) and int(m.group(3)) <= seq)


def check_books(
    con: Any, ledger: Ledger, start_ms: int, end_ms: int, moments: int, rng: random.Random
) -> tuple[list[Moment], int]:
    """`moments` random (market, time) pairs compared; how many draws fell in a gap."""
    gaps = _gap_rows(con, datetime.fromtimestamp(start_ms / 1000 - 3600, UTC))
    # a market counts from the recorder's first snapshot of it on: before that it was not
    # subscribed (the books follow the scope's open markets; one listed unopened joins later)
    first = con.execute(
        "SELECT market_ticker, epoch_ms(min(received_at)) FROM book_snapshots GROUP BY 1"
    ).fetchall()
    since = {m: int(ms) for m, ms in first}
    # ... and until the recorder dropped it (determined, settled): its book is not followed after
    until: dict[str, int] = {}
    for e in read_events(con, datetime.fromtimestamp(start_ms / 1000 - 3600, UTC)):
        if e.kind == "markets_removed" and e.detail.startswith("orderbook_delta: "):
            until.setdefault(
                e.detail.removeprefix("orderbook_delta: "), int(e.at.timestamp() * 1000)
            )
    markets = sorted(since.keys() & ledger.times.keys())
    out: list[Moment] = []
    in_gaps = 0
    while len(out) < moments:
        at_ms = rng.randint(start_ms, end_ms)
        for _ in range(DRAWS_PER_MOMENT):
            market = rng.choice(markets)
            followed = since[market] <= at_ms - QUIET_BEFORE_MS and at_ms < until.get(
                market, end_ms + 1
            )
            if followed and ledger.quiet(market, at_ms):
                break
        else:
            continue
        at = datetime.fromtimestamp(at_ms / 1000, UTC)
        stored = books.book_at(con, market, at)
        if not stored.valid:
            if not _in_gap(gaps, at):
                out.append(
                    Moment(market, at_ms, False, {"invalid": [(stored.reason or "", "")]}, {})
                )
            in_gaps += 1
            continue
        truth = ledger.book_at(market, at_ms)
        mine = {
            "yes": _levels((lv.price, lv.size) for lv in stored.yes),
            "no": _levels((lv.price, lv.size) for lv in stored.no),
        }
        theirs = {"yes": _levels(truth.levels("yes")), "no": _levels(truth.levels("no"))}
        out.append(Moment(market, at_ms, mine == theirs, mine, theirs))
    return out, in_gaps


def check_gaps(con: Any, ledger: Ledger, since_ms: int) -> list[dict[str, Any]]:
    """The frames the simulator dropped (on the recorder's connections: it is the only client)
    that the recorder did not record: no `sequence_gap` event naming the frame's seq on its sid,
    or no `sequence_gap` coverage row of its channel from that event on."""
    since = datetime.fromtimestamp(since_ms / 1000 - 3600, UTC)
    events = [e for e in read_events(con, since) if e.kind == "sequence_gap"]
    rows = _gap_rows(con, since)
    missing = []
    for d in ledger.dropped:
        channel, sid, seq = d["channel"], int(d["sid"]), int(d["seq"])
        found = [e for e in events if _names_seq(e.detail, channel, sid, seq)]
        if not any(
            ch == channel and lo <= e.at and (hi is None or e.at <= hi)
            for e in found
            for ch, lo, hi, _ in rows
        ):
            missing.append({**d, "events": [e.detail[:200] for e in found]})
    return missing


def check_trades(con: Any, ledger: Ledger) -> tuple[int, int, int]:
    """(expected, missing, extra) trades: the ledger's from the first one stored on."""
    stored = {
        tid: None for (tid,) in con.execute("SELECT DISTINCT trade_id FROM trades").fetchall()
    }
    duplicates = con.execute("SELECT count(*) - count(DISTINCT trade_id) FROM trades").fetchone()[0]
    if not stored:
        return len(ledger.trades), len(ledger.trades), int(duplicates)
    first = min(ledger.trades[t] for t in stored if t in ledger.trades)
    expected = {t for t, at in ledger.trades.items() if at >= first}
    missing = len(expected - stored.keys())
    extra = len(stored.keys() - ledger.trades.keys()) + int(duplicates)
    return len(expected), missing, extra


def check_replay(db: Path, fresh: Path) -> dict[str, int]:
    """Rows that differ, per table, between the live database and a replay of its landing log."""
    replay(landing_folder(db), fresh)
    return differences(db, fresh, COMPARED_TABLES)


def _drops(rng: random.Random) -> Iterator[dict[str, Any]]:
    while True:
        channel = rng.choice(DROPPED_CHANNELS)
        yield {"drop_frames": {"channel": channel, "count": 1}}


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    folder = ctx.folder("books-check")
    db = folder / "k.duckdb"
    ledger_path = folder / "ledger.jsonl"
    rng = random.Random(ctx.seed)
    dropped = 0
    with ctx.simulator(
        markets=plan.books_check_markets, rate=plan.books_check_rate, ledger=ledger_path
    ) as sim:
        engine = ctx.engine(
            "books-check",
            sim,
            db,
            config={"channels": list(CHANNELS), "keep_landing": True},
            status_every_s=1.0,
            sample_every_s=1.0,
        )
        ctx.settle(engine, plan.settle_s, "books-check")
        start_ms = int(time.time() * 1000)
        end = time.monotonic() + plan.books_check_s
        next_drop = time.monotonic() + plan.books_check_drop_every_s
        # no drop near the end: a gap shows when the sid's next frame comes, and the run must
        # leave time for it (and for the resync or backfill that ends the gap)
        quiet_end_s = max(5.0, 2 * plan.books_check_drop_every_s)
        faults = _drops(rng)
        while (now := time.monotonic()) < end:
            if now >= next_drop and end - now > quiet_end_s:  # a late drop might go unseen
                sim.set_faults(**next(faults))
                dropped += 1
                next_drop = now + plan.books_check_drop_every_s
            ctx.display.status(
                f"{dropped} frames dropped | {engine.status.get('ws_frames', 0)} frames"
            )
            if not engine.alive():
                raise RuntimeError("the engine exited during the books check")
            time.sleep(min(0.5, max(0.05, end - now)))
        sim.set_faults(pause_updates=True)
        time.sleep(plan.pause_s + QUIET_AFTER_MS / 1000)
        end_ms = int(time.time() * 1000) - QUIET_AFTER_MS
        engine.stop(timeout_s=60)
    assert sim.book_ledger_path is not None
    ledger = Ledger.read(sim.book_ledger_path)
    ctx.display.status("comparing the warehouse with the book ledger")
    with Warehouse(db).connect(read_only=True) as con:
        moments, in_gaps = check_books(
            con, ledger, start_ms + QUIET_BEFORE_MS, end_ms, plan.books_check_times, rng
        )
        unrecorded = check_gaps(con, ledger, start_ms)
        expected, missing, extra = check_trades(con, ledger)
    ctx.display.status("replaying the landing log into a fresh database")
    replayed = check_replay(db, folder / "replayed.duckdb")
    equal = sum(m.equal for m in moments)
    return {
        "figures": {
            "books_check_equal": equal,
            "books_check_moments": len(moments),
            "books_check_gaps_injected": len(ledger.dropped),
            "books_check_gaps_unrecorded": len(unrecorded),
            "books_check_trades": expected,
            "books_check_trades_missing": missing,
            "books_check_trades_extra": extra,
            "books_check_replay_differences": sum(replayed.values()),
        },
        "details": {
            "markets": plan.books_check_markets,
            "run_s": plan.books_check_s,
            "moments": [m.__dict__ for m in moments if not m.equal][:5],
            "moments_in_gaps": in_gaps,
            "unrecorded_gaps": unrecorded[:10],
            "replay_differences": replayed,
        },
    }

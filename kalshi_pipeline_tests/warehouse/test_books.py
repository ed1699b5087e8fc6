"""The order-book queries against the simulator's own books: the book of a market at a time
(across a reconnect and a handover's two overlapping connections), its validity around a
sequence gap, top-of-book history against the ticker channel, and trades against the ledger."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from kalshi_pipeline.stream.landing import Kind, LandingLog, Source
from kalshi_pipeline.stream.writer import Writer
from kalshi_pipeline.warehouse import connect
from kalshi_pipeline.warehouse.books import (
    ENGINE_BITS,
    KEYFRAME_SQL,
    BookQueryError,
    book_at,
    top_of_book,
    top_of_book_differences,
    trades_between,
)
from kalshi_pipeline.warehouse.owner import Owner
from kalshi_pipeline.warehouse.query import run_sql
from kalshi_pipeline_tests.helpers import wait_for
from kalshi_pipeline_tests.warehouse.book_recorder import record

pytestmark = pytest.mark.timeout(240)

D = Decimal
QUIET_MS = 700  # no change of the market this long before and after a sampled time
SimBook = dict[tuple[str, Decimal], Decimal]


def _open_tickers(sim: Any, n: int) -> list[str]:
    markets = requests.get(f"{sim.rest_url}/markets", params={"status": "open"}, timeout=10)
    return [m["ticker"] for m in markets.json()["markets"]][:n]


def _load(db: Path, folder: Path, keyframe_s: float) -> None:
    """Load the landing log as the stream does, with a keyframe every `keyframe_s` of each
    changing book (the stream's is half an hour: these runs last seconds)."""
    writer = Writer(Owner(db), folder, keyframe_s=keyframe_s)
    try:
        wait_for(lambda: writer.load_once() == 0, timeout=120, what="the landing log loaded")
    finally:
        writer.close()


def _ms(ns: int) -> int:
    return ns // 1_000_000


def _at(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class Ledger:
    """The simulator's books, rebuilt from its book ledger (the exchange's truth)."""

    def __init__(self, lines: list[dict[str, Any]], tickers: Iterable[str]) -> None:
        self.lines = [
            ln
            for ln in lines
            if ln.get("type") in ("orderbook_snapshot", "orderbook_delta", "trade")
            and "conn_id" not in ln  # snapshots sent to a client, not the exchange's own
            and ln["msg"].get("market_ticker") in set(tickers)
        ]
        self.changes: dict[str, list[int]] = defaultdict(list)
        for ln in self.lines:
            if ln["type"] == "orderbook_delta":
                self.changes[ln["msg"]["market_ticker"]].append(ln["emitted_at_ms"])

    def book(self, ticker: str, at_ms: float) -> SimBook:
        book: SimBook = {}
        for ln in self.lines:
            if ln["emitted_at_ms"] > at_ms:
                break
            m = ln["msg"]
            if m.get("market_ticker") != ticker:
                continue
            if ln["type"] == "orderbook_snapshot":
                book = {}
                for side in ("yes", "no"):
                    for price, size in m.get(f"{side}_dollars_fp") or []:
                        book[(side, D(price))] = D(size)
            elif ln["type"] == "orderbook_delta":
                key = (m["side"], D(m["price_dollars"]))
                book[key] = book.get(key, D(0)) + D(m["delta_fp"])
                if book[key] == 0:
                    del book[key]
        return book

    def quiet_times(self, ticker: str, lo_ms: float, hi_ms: float) -> list[float]:
        """Times inside (lo, hi) when the market had not changed for QUIET_MS and would not
        for QUIET_MS more: the book received by then is the exchange's, whatever the lag."""
        times = [lo_ms, *(t for t in self.changes[ticker] if lo_ms < t < hi_ms), hi_ms]
        return [a + QUIET_MS for a, b in itertools.pairwise(times) if b - a >= 2 * QUIET_MS]

    def trades(self, lo_ms: float, hi_ms: float) -> dict[str, tuple[Any, ...]]:
        return {
            ln["msg"]["trade_id"]: (
                ln["msg"]["market_ticker"],
                D(ln["msg"]["yes_price_dollars"]),
                D(ln["msg"]["count_fp"]),
            )
            for ln in self.lines
            if ln["type"] == "trade" and lo_ms <= ln["msg"]["ts_ms"] <= hi_ms
        }


def _stored(con: Any, ticker: str, at_ms: float) -> tuple[SimBook, bool]:
    b = book_at(con, ticker, _at(at_ms))
    book = {(lv.side, lv.price): lv.size for lv in b.yes + b.no}
    assert (book, b.valid) == _macro(con, ticker, _at(at_ms)), "Python and SQL disagree"
    return book, b.valid


def _macro(con: Any, ticker: str, at: datetime) -> tuple[SimBook, bool]:
    """The same book through the SQL macro (`book_at` in Python takes a shorter way)."""
    rows = con.execute("FROM book_at(?, ?)", [ticker, at]).fetchall()
    valid = bool(rows[0][4]) if rows else False
    if not rows:
        state = con.execute("FROM book_validity(?, ?)", [ticker, at]).fetchall()
        valid = bool(state and state[0][2])
    return {(side, price): size for side, _n, price, size, *_ in rows}, valid


def _engine_span(con: Any, pid: int) -> tuple[int, int]:
    row = con.execute(
        "SELECT epoch_ms(min(received_at)), epoch_ms(max(received_at)) FROM ("
        "SELECT received_at, landing_segment FROM book_snapshots UNION ALL "
        "SELECT received_at, landing_segment FROM book_deltas) WHERE landing_segment & 4194303 = ?",
        [pid],
    ).fetchone()
    return int(row[0]), int(row[1])


def test_book_at_random_times_is_the_exchanges_book_across_a_reconnect_and_a_handover(
    sim_factory: Any, tmp_path: Path
) -> None:
    sim = sim_factory(markets=30, rate=40, extra_args=["--book-depth-events", "1.5"])
    tickers = _open_tickers(sim, 8)
    folder = tmp_path / "k.landing"
    landing = LandingLog(folder)

    async def run() -> tuple[list[tuple[int, int]], int]:
        # this engine records over two connections (a reconnect half-way); a second engine, in a
        # process of its own, starts after the reconnect: both hold a connection to the same
        # books for a while, then only the successor does
        first = asyncio.create_task(
            record(sim.rest_url, sim.ws_url, landing, tickers, 24.0, connections=2)
        )
        await asyncio.sleep(17.0)  # 5 s into the second connection
        successor = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kalshi_pipeline_tests.warehouse.book_recorder",
            sim.rest_url,
            sim.ws_url,
            str(folder),
            ",".join(tickers),
            "16",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            spans = await first
            _out, err = await asyncio.wait_for(successor.communicate(), timeout=120)
            assert successor.returncode == 0, err.decode()[-2000:]
        finally:
            if successor.returncode is None:
                successor.kill()
                await successor.wait()
        return spans, successor.pid

    try:
        spans, successor_pid = asyncio.run(run())
    finally:
        landing.close()
    end_ms = time.time_ns() // 1_000_000
    wait_for(lambda: sim.read_book_ledger()[-1]["emitted_at_ms"] > end_ms, timeout=30)
    ledger = Ledger(sim.read_book_ledger(), tickers)
    db = tmp_path / "k.duckdb"
    _load(db, folder, keyframe_s=3.0)

    rng = random.Random(13)
    with connect(db, read_only=True) as con:
        b_lo, b_hi = _engine_span(con, successor_pid)
        a2_lo, a_hi = _ms(spans[1][0]), _ms(spans[1][1])
        assert a2_lo < b_lo < a_hi < b_hi, (
            "the successor connected after the reconnect and outlived this engine"
        )
        phases = {
            "first connection": (_ms(spans[0][0]) + 1000, _ms(spans[0][1])),
            "after the reconnect": (a2_lo + 1000, b_lo),
            "both engines": (b_lo, a_hi),
            "the successor alone": (a_hi, b_hi),
        }
        sampled = 0
        for phase, (lo, hi) in phases.items():
            candidates = [(t, at) for t in tickers for at in ledger.quiet_times(t, lo, hi)]
            assert candidates, f"no quiet moment to sample in {phase}"
            for ticker, at in rng.sample(candidates, min(len(candidates), 2 if sampled else 1)):
                book, valid = _stored(con, ticker, at)
                assert book == ledger.book(ticker, at), f"{ticker} at {_at(at)} ({phase})"
                assert book and valid
                sampled += 1
        assert sampled >= 5
        # books were found from keyframes too, on both engines
        kept = con.execute(
            "SELECT count(DISTINCT landing_segment & 4194303) FROM book_keyframes"
        ).fetchone()
        assert kept == (2,)

        # top of book from the books agrees with the ticker channel stored beside them
        lo, hi = _at(_ms(spans[0][0]) + 500), _at(b_hi - 500)
        checked = 0
        for ticker in tickers:
            assert top_of_book_differences(con, ticker, lo, hi) == []
            history = top_of_book(con, ticker, lo, hi)
            assert history and history[0].received_at == lo
            assert all(r.yes_bid < r.yes_ask for r in history)
            checked += len(history)
        ticks = con.execute(
            "SELECT count(*) FROM ticks WHERE received_at BETWEEN ? AND ?", [lo, hi]
        ).fetchone()[0]
        assert checked > 20 and ticks > 20

        # trades between two times: exactly the exchange's, inside one connection
        t_lo, t_hi = _ms(spans[0][0]) + 500, _ms(spans[0][1]) - 500
        stored = {
            t["trade_id"]: (t["market_ticker"], t["yes_price"], t["count"])
            for t in trades_between(con, _at(t_lo), _at(t_hi))
        }
        assert stored == ledger.trades(t_lo, t_hi)
        one = tickers[0]
        assert {t["trade_id"] for t in trades_between(con, _at(t_lo), _at(t_hi), ticker=one)} == {
            k for k, v in ledger.trades(t_lo, t_hi).items() if v[0] == one
        }


def test_a_book_is_invalid_inside_a_sequence_gap_and_valid_after_the_resync_snapshot(
    sim_factory: Any, tmp_path: Path
) -> None:
    sim = sim_factory(markets=20, rate=40, extra_args=["--book-depth-events", "1.5"])
    tickers = _open_tickers(sim, 5)
    folder = tmp_path / "k.landing"
    landing = LandingLog(folder)

    async def run() -> list[tuple[int, int]]:
        task = asyncio.create_task(record(sim.rest_url, sim.ws_url, landing, tickers, 10.0))
        # the fault drops the next order-book frame: set it once the recorder is subscribed
        # (the simulator's ledger names each snapshot it sent on a socket)
        await asyncio.to_thread(
            wait_for,
            lambda: any(
                ln["type"] == "orderbook_snapshot" and "conn_id" in ln
                for ln in sim.read_book_ledger()
            ),
            timeout=60,
            what="the recorder's first snapshot",
        )
        await asyncio.to_thread(
            sim.set_faults, drop_frames={"channel": "orderbook_delta", "count": 1}
        )
        return await task

    try:
        spans = asyncio.run(run())
    finally:
        landing.close()
    ledger = Ledger(sim.read_book_ledger(), tickers)
    db = tmp_path / "k.duckdb"
    _load(db, folder, keyframe_s=1.0)
    with connect(db, read_only=True) as con:
        gap = con.execute(
            "SELECT epoch_ms(occurred_at), detail FROM feed_events WHERE kind = 'sequence_gap'"
        ).fetchall()
        assert len(gap) == 1, gap
        gap_ms = gap[0][0]
        resync_ms = con.execute(
            "SELECT epoch_ms(max(received_at)) FROM book_snapshots WHERE received_at > ?",
            [_at(gap_ms)],
        ).fetchone()[0]
        assert resync_ms > gap_ms + 100  # the recorder waits before it asks for snapshots
        for ticker in tickers:
            inside = book_at(con, ticker, _at(gap_ms + 50))
            assert not inside.valid and not _macro(con, ticker, _at(gap_ms + 50))[1]
            assert inside.reason and "sequence_gap" in inside.reason
            assert book_at(con, ticker, _at(resync_ms + 1)).valid
            before = book_at(con, ticker, _at(gap_ms - 1))
            assert before.valid
        # after the resync the rebuilt book is the exchange's again
        after = [
            (t, at) for t in tickers for at in ledger.quiet_times(t, resync_ms, _ms(spans[0][1]))
        ]
        assert after
        for ticker, at in after[:3]:
            book, valid = _stored(con, ticker, at)
            assert valid and book == ledger.book(ticker, at)


def test_the_queries_answer_from_sql_by_name_and_refuse_naive_times(tmp_path: Path) -> None:
    """The macros live in the database: `kalshi-pipeline sql` calls them by name."""
    db = tmp_path / "k.duckdb"
    with connect(db, create=True) as con:
        con.execute(
            "INSERT INTO book_snapshots (market_ticker, sid, seq, yes_levels, no_levels, "
            "received_at, landing_segment, landing_offset) VALUES ('M', 1, 1, "
            "[{'price': 0.4200, 'size': 10}], [{'price': 0.5500, 'size': 3}], "
            "'2026-11-27 12:00:00Z', 4194305, 10)"
        )
        con.execute(
            "INSERT INTO book_deltas_stored (market_ticker, sid, seq, side, price, delta, "
            "received_at, exchange_lag_ms, sent_lag_ms, landing_segment, landing_offset) VALUES "
            "('M', 1, 2, 'yes', 0.4300, 5, '2026-11-27 12:00:01.002345Z', 2, 1, 4194305, 200)"
        )
        # the view gives Kalshi's times back exactly (ts_ms 12:00:01.000, sending 12:00:01.001)
        assert con.execute("SELECT exchange_ts, sent_at FROM book_deltas").fetchone() == (
            datetime(2026, 11, 27, 12, 0, 1, tzinfo=UTC),
            datetime(2026, 11, 27, 12, 0, 1, 1000, tzinfo=UTC),
        )
        with pytest.raises(BookQueryError, match="timezone-aware"):
            book_at(con, "M", datetime(2026, 11, 27, 12))
        with pytest.raises(BookQueryError, match="swap"):
            trades_between(con, _at(2_000), _at(1_000))
    [levels] = run_sql(
        db, "FROM book_at('M', TIMESTAMPTZ '2026-11-27 12:00:02Z', depth := 1) ORDER BY side"
    )
    assert levels.columns == ["side", "level", "price", "size", "valid", "snapshot_at"]
    assert [r[:5] for r in levels.rows] == [
        ("no", 1, D("0.5500"), D("3.00"), True),
        ("yes", 1, D("0.4300"), D("5.00"), True),
    ]
    [tob] = run_sql(
        db,
        "SELECT yes_bid, yes_ask FROM top_of_book('M', TIMESTAMPTZ '2026-11-27 11:00:00Z', "
        "TIMESTAMPTZ '2026-11-27 13:00:00Z')",
    )
    assert tob.rows == [(D("0.4200"), D("0.4500")), (D("0.4300"), D("0.4500"))]
    [state] = run_sql(db, "FROM book_validity('M', TIMESTAMPTZ '2026-11-27 11:00:00Z')")
    assert state.rows == []  # nothing recorded of M by then

    def valid_at(at: str) -> bool:
        [state] = run_sql(db, f"SELECT valid FROM book_validity('M', TIMESTAMPTZ '{at}')")
        return bool(state.rows[0][0])

    with connect(db) as con:
        # a gap on the trade channel naming M leaves its book alone
        con.execute(
            "INSERT INTO feed_events (occurred_at, source, kind, detail) "
            "VALUES ('2026-11-27 12:00:02Z', 'websocket', "
            "'sequence_gap', 'trade sid 2: seq 5 expected, 7 received; markets: M')"
        )
        assert valid_at("2026-11-27 12:00:03Z")
        # a gap on the order-book sid with every market of it ("all") breaks it
        con.execute(
            "INSERT INTO feed_events (occurred_at, source, kind, detail) "
            "VALUES ('2026-11-27 12:00:04Z', 'websocket', "
            "'sequence_gap', 'orderbook_delta sid 1: seq 3 expected, 4 received; markets: all')"
        )
    assert valid_at("2026-11-27 12:00:03Z") and not valid_at("2026-11-27 12:00:05Z")

    # deltas from a connection whose snapshot was never stored: no book, and the reason
    with connect(db) as con:
        con.execute(
            "INSERT INTO book_deltas_stored (market_ticker, sid, seq, side, price, delta, "
            "received_at, landing_segment, landing_offset) VALUES "
            "('M', 7, 9, 'yes', 0.4400, 1, '2026-11-27 12:00:06Z', 4194306, 50)"
        )
        orphan = book_at(con, "M", datetime(2026, 11, 27, 12, 0, 7, tzinfo=UTC))
        assert not orphan.valid and orphan.yes == [] and orphan.snapshot_at is None
        assert orphan.reason and "no stored snapshot" in orphan.reason
        assert con.execute("FROM book_at('M', TIMESTAMPTZ '2026-11-27 12:00:07Z')").fetchall() == []


def validity_everywhere(con: Any, ticker: str, second: int) -> tuple[bool, str | None, int | None]:
    """(valid, reason, sid) of the book of `ticker` at 12:00:<second> on 2026-11-27, held equal
    in Python's `book_at`, the `book_validity` macro and the `book_at` macro."""
    at = datetime(2026, 11, 27, 12, 0, second, tzinfo=UTC)
    book = book_at(con, ticker, at)
    [(valid, reason, sid)] = con.execute(
        "SELECT valid, reason, sid FROM book_validity(?, ?)", [ticker, at]
    ).fetchall()
    [(rows_valid,)] = con.execute(
        "SELECT DISTINCT valid FROM book_at(?, ?)", [ticker, at]
    ).fetchall()
    assert book.valid == valid == rows_valid, (second, book, valid, rows_valid)
    assert book.reason == reason
    return valid, reason, sid


def test_a_gap_breaks_the_books_of_the_engine_that_saw_it_only(tmp_path: Path) -> None:
    """During a handover two engines hold the same books, each on its own connection: a gap on
    one engine's subscription breaks the books that follow that engine, not those that follow
    the other (macro and Python alike); an event of no known engine (recorded before schema
    version 4) breaks both. The writer records the engine of each feed event it loads."""
    db = tmp_path / "k.duckdb"
    landing = tmp_path / "landing"
    log = LandingLog(landing)
    log.append(Kind.FEED_EVENT, Source.WEBSOCKET, b'{"kind":"connect","detail":"ws://x"}')
    log.close()
    with Owner(db) as owner:
        assert Writer(owner, landing).drain(30)
        con = owner.connection(timeout_s=5)
        assert con.execute("SELECT kind, engine FROM feed_events").fetchall() == [
            ("connect", os.getpid() & ENGINE_BITS)
        ]

        def snapshot(at: str, engine: int, sid: int, offset: int) -> str:
            return (
                "INSERT INTO book_snapshots (market_ticker, sid, seq, yes_levels, no_levels, "
                f"received_at, landing_segment, landing_offset) VALUES ('M', {sid}, 1, "
                f"[{{'price': 0.4200, 'size': 10}}], [], '{at}', {4194304 + engine}, {offset})"
            )

        def gap(at: str, engine: int | None, sid: int) -> str:
            detail = f"orderbook_delta sid {sid}: seq 5 expected, 7 received; markets: M"
            return (
                "INSERT INTO feed_events (occurred_at, source, kind, detail, engine) VALUES "
                f"('{at}', 'websocket', 'sequence_gap', '{detail}', "
                f"{'NULL' if engine is None else engine})"
            )

        def state(second: int) -> tuple[bool, int | None]:
            valid, _reason, sid = validity_everywhere(con, "M", second)
            return valid, sid

        con.execute(snapshot("2026-11-27 12:00:00Z", 1, 1, 10))  # the engine handing over
        con.execute(snapshot("2026-11-27 12:00:01Z", 2, 5, 10))  # its successor, later
        assert state(2) == (True, 5)
        con.execute(gap("2026-11-27 12:00:03Z", 1, 1))  # seen by the first engine only
        assert state(4) == (True, 5)
        con.execute(gap("2026-11-27 12:00:05Z", 2, 5))  # seen by the successor
        assert state(6) == (False, 5)
        con.execute(snapshot("2026-11-27 12:00:07Z", 2, 5, 20))  # its resync
        assert state(8) == (True, 5)
        con.execute(gap("2026-11-27 12:00:09Z", None, 1))  # an engine not known: both
        assert state(10) == (False, 5)


def test_a_removed_market_is_invalid_until_a_later_snapshot(tmp_path: Path) -> None:
    """`markets_removed` of the order-book channel breaks the market's book (macro and Python
    alike) from its time until a later snapshot; a removal of another market, or from the ticker
    subscription, leaves it alone. So does a `book_invalid` of its subscription naming it."""
    db = tmp_path / "k.duckdb"

    def snapshot(at: str, offset: int) -> str:
        return (
            "INSERT INTO book_snapshots (market_ticker, sid, seq, yes_levels, no_levels, "
            f"received_at, landing_segment, landing_offset) VALUES ('M', 1, {offset}, "
            f"[{{'price': 0.4200, 'size': 10}}], [], '{at}', 4194305, {offset})"
        )

    def event(at: str, kind: str, detail: str) -> str:
        return (
            "INSERT INTO feed_events (occurred_at, source, kind, detail) "
            f"VALUES ('{at}', 'websocket', '{kind}', '{detail}')"
        )

    with connect(db, create=True) as con:
        con.execute(snapshot("2026-11-27 12:00:00Z", 10))
        con.execute(event("2026-11-27 12:00:01Z", "markets_removed", "orderbook_delta: MM"))
        con.execute(event("2026-11-27 12:00:02Z", "markets_removed", "M"))  # ticker channel
        con.execute(event("2026-11-27 12:00:03Z", "markets_removed", "orderbook_delta: M"))
        con.execute(snapshot("2026-11-27 12:00:05Z", 20))  # added again: a fresh snapshot

        def state(second: int) -> tuple[bool, str | None]:
            valid, reason, _sid = validity_everywhere(con, "M", second)
            return valid, reason

        assert state(2) == (True, None)
        valid, reason = state(4)
        assert not valid and reason is not None
        assert reason.startswith("markets_removed at 2026-11-27 12:00:03")
        assert reason.endswith(": orderbook_delta: M")
        assert state(6) == (True, None)
        # a book_invalid of the market's subscription names it (or not)
        other = "orderbook_delta sid 1: error 14 (Market Ticker required) unasked; markets: MM,N"
        con.execute(event("2026-11-27 12:00:07Z", "book_invalid", other))
        assert state(8) == (True, None)
        mine = "orderbook_delta sid 1: error 14 (Market Ticker required) unasked; markets: N,M"
        con.execute(event("2026-11-27 12:00:09Z", "book_invalid", mine))
        assert state(10) == (False, f"book_invalid at 2026-11-27 12:00:09.000000: {mine}")


def test_a_keyframe_is_the_book_at_its_delta_not_a_resync_snapshot_received_after_it(
    tmp_path: Path,
) -> None:
    """A window whose last delta of a market came before a gap and its resync snapshot: the
    keyframe is the book at that delta (from the first snapshot), so the book inside the gap is
    still invalid and the book after the resync is the resync snapshot's."""
    db = tmp_path / "k.duckdb"
    level = "[{{'price': {p}, 'size': {n}}}]"
    with Owner(db) as owner:  # the writer's own connection runs the keyframe statement
        con = owner.connection()
        for at, yes, no, offset in (
            ("12:00:00", level.format(p=0.40, n=10), level.format(p=0.55, n=3), 10),
            ("12:00:00.600", level.format(p=0.45, n=7), level.format(p=0.50, n=2), 40),
        ):
            con.execute(
                "INSERT INTO book_snapshots (market_ticker, sid, seq, yes_levels, no_levels, "
                f"received_at, landing_segment, landing_offset) VALUES ('M', 1, 1, {yes}, "
                f"{no}, '2026-11-27 {at}Z', 4194305, {offset})"
            )
        con.execute(
            "INSERT INTO book_deltas_stored (market_ticker, sid, seq, side, price, delta, "
            "received_at, exchange_lag_ms, sent_lag_ms, landing_segment, landing_offset) VALUES "
            "('M', 1, 2, 'yes', 0.4100, 5, '2026-11-27 12:00:00.200Z', 2, 1, 4194305, 20)"
        )
        con.execute(
            "INSERT INTO feed_events (occurred_at, source, kind, detail) "
            "VALUES ('2026-11-27 12:00:00.300Z', 'websocket', "
            "'sequence_gap', 'orderbook_delta sid 1: seq 3 expected, 4 received; markets: M')"
        )
        con.execute(
            KEYFRAME_SQL,
            [_at(1_795_780_800_000), _at(1_795_780_801_000), 1],  # (12:00:00, 12:00:01]
        )
        keyframe = con.execute(
            "SELECT yes_levels, snapshot_at, received_at FROM book_keyframes"
        ).fetchall()
        assert keyframe == [
            (
                [{"price": Decimal("0.4000"), "size": 10}, {"price": Decimal("0.4100"), "size": 5}],
                _at(1_795_780_800_000),
                _at(1_795_780_800_200),
            )
        ]
        inside = book_at(con, "M", _at(1_795_780_800_400))
        assert not inside.valid and "sequence_gap" in (inside.reason or "")
        assert _macro(con, "M", _at(1_795_780_800_400))[1] is False
        after = book_at(con, "M", _at(1_795_780_800_700))
        assert after.valid and [(lv.price, lv.size) for lv in after.yes] == [(Decimal("0.4500"), 7)]


def test_books_from_keyframes_equal_books_from_the_snapshot(tmp_path: Path) -> None:
    """A day of the simulator's order flow loaded twice, with keyframes every half hour and
    without: the book at any time is the same either way, and keyframes were used."""
    from kalshi_pipeline.bench.bookday import write_day

    start = 1_764_201_600_000_000_000
    day = write_day(tmp_path / "k.landing", markets=12, deltas=4_000, start_ns=start)
    with_keyframes, without = tmp_path / "kf.duckdb", tmp_path / "plain.duckdb"
    _load(with_keyframes, tmp_path / "k.landing", keyframe_s=1800.0)
    _load(
        without, tmp_path / "k.landing", keyframe_s=1e9
    )  # none: the next boundary is decades away
    rng = random.Random(5)
    samples = [
        (rng.choice(day.markets), _at(rng.randint(start, day.end_ns) / 1e6)) for _ in range(30)
    ]
    with connect(with_keyframes, read_only=True) as a, connect(without, read_only=True) as b:
        assert a.execute("SELECT count(*) FROM book_keyframes").fetchone()[0] > 100
        assert b.execute("SELECT count(*) FROM book_keyframes").fetchone()[0] == 0
        for ticker, at in samples:
            book = book_at(a, ticker, at)
            assert book == book_at(b, ticker, at), (ticker, at)
            levels = {(lv.side, lv.price): lv.size for lv in book.yes + book.no}
            assert (levels, book.valid) == _macro(a, ticker, at) == _macro(b, ticker, at)


def test_a_database_made_by_an_older_version_gets_todays_query_rules(tmp_path: Path) -> None:
    """The macros are created by a migration once; an owner that starts on an older file
    replaces them, so `kalshi-pipeline sql` and the Python queries answer alike."""
    db = tmp_path / "k.duckdb"
    with Owner(db) as owner:  # as an older version left it: a book_validity of other rules
        owner.connection().execute(
            "CREATE OR REPLACE MACRO book_validity(ticker, at_time) AS TABLE "
            "SELECT NULL::TIMESTAMPTZ AS snapshot_at, NULL::INTEGER AS sid, true AS valid, "
            "NULL::VARCHAR AS reason"
        )
    with Owner(db) as owner:
        con = owner.connection()
        assert con.execute("FROM book_validity('M', now())").fetchall() == []  # today's rule
        (definition,) = con.execute(
            "SELECT macro_definition FROM duckdb_functions() WHERE function_name = 'book_validity'"
        ).fetchone()
        assert "book_base" in definition

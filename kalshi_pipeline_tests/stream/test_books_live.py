"""Order books and trades through the engine: subscribed for the scope, sequence gaps found,
recorded and resynced, and the books left equal to the exchange's.

The simulator runs in its own process with its real books; its `drop_frames` and
`reorder_frames` faults lose or swap one sequenced frame, and its book ledger says which seq.
Pass or fail is decided by feed events, the in-memory books, DuckDB and REST, never by timing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from kalshi_pipeline.stream.config import Scope
from kalshi_pipeline.stream.engine import Engine
from kalshi_pipeline.warehouse import connect, coverage
from kalshi_pipeline.warehouse.books import book_at
from kalshi_pipeline_tests.helpers import feed_events, query, wait_for
from kalshi_pipeline_tests.stream.conftest import config_for
from kalshi_pipeline_tests.stream.test_book_storage import _rest_book

pytestmark = pytest.mark.timeout(180)

ALL = ("ticker", "orderbook_delta", "trade")


def _open_tickers(sim: Any) -> list[str]:
    body = requests.get(f"{sim.rest_url}/markets", params={"status": "open"}, timeout=10).json()
    return sorted(m["ticker"] for m in body["markets"])


def _events(db: Path, kind: str) -> list[str]:
    return [row[3] for row in feed_events(db) if row[1] == "websocket" and row[2] == kind]


def _live_books(engine: Engine, tickers: list[str]) -> dict[str, Any] | None:
    """The feed's in-memory books of these markets, when every one is valid."""
    assert engine.ws_feed is not None
    try:
        books = {t: engine.ws_feed.seq.books.get(t) for t in tickers}
        if all(b is not None and b.valid for b in books.values()):
            return {t: b.levels() for t, b in books.items() if b is not None}
    except RuntimeError:  # changed while read from this thread: look again
        pass
    return None


# Each market's newest snapshot (in landing order: sids restart after a resubscription) and the
# deltas of the same subscription after it.
def _stored_books(db: Path, tickers: list[str]) -> dict[str, dict[tuple[str, Decimal], Decimal]]:
    """The stored books now, through the warehouse's `book_at` query."""
    out: dict[str, dict[tuple[str, Decimal], Decimal]] = {}
    for t in tickers:
        rows = query(db, "SELECT side, price, size FROM book_at(?, now())", [t])
        out[t] = {(side, price): size for side, price, size in rows}
    return out


def _books_equal_the_exchange(sim: Any, db: Path, engine: Engine, tickers: list[str]) -> None:
    """With the exchange paused: the live books and the stored ones equal REST's, market by
    market."""
    sim.set_faults(pause_updates=True)
    rest = {t: _rest_book(sim, t) for t in tickers}
    wait_for(
        lambda: _live_books(engine, tickers) == rest,
        timeout=30,
        what="the live books equal to REST's",
    )
    wait_for(
        lambda: _stored_books(db, tickers) == rest,
        timeout=60,
        interval=0.5,
        what="the stored books equal to REST's",
    )


def _start(sim: Any, engines: Any, db: Path, tickers: list[str], **overrides: Any) -> Engine:
    overrides.setdefault("channels", ALL)
    overrides.setdefault("book_check_every_s", 0)
    engine: Engine = engines(config_for(sim, db, scope=Scope.of(tickers=tickers), **overrides))
    wait_for(lambda: _live_books(engine, tickers), timeout=30, what="a snapshot of every market")
    return engine


def _faulted(sim: Any, kind: str, channel: str) -> dict[str, Any]:
    return wait_for(
        lambda: next(
            (
                ln
                for ln in sim.read_book_ledger()
                if ln["type"] == kind and ln["channel"] == channel
            ),
            None,
        ),
        timeout=30,
        what=f"a {kind} {channel} frame in the book ledger",
    )


def test_a_dropped_book_frame_is_recorded_resynced_and_counted_in_coverage(
    sim_factory: Any, engines: Any, tmp_path: Path
) -> None:
    sim = sim_factory(markets=30, rate=60, extra_args=["--book-depth-events", "1.0"])
    tickers = _open_tickers(sim)[:6]
    db = tmp_path / "k.duckdb"
    engine = _start(sim, engines, db, tickers)
    wait_for(
        lambda: query(db, "SELECT count(*) FROM book_deltas")[0][0] >= 20,
        timeout=60,
        what="deltas stored",
    )
    assert "use_yes_price=false" in _events(db, "subscribe")[-1]

    sim.set_faults(drop_frames={"channel": "orderbook_delta", "count": 1})
    dropped = _faulted(sim, "dropped", "orderbook_delta")
    sid, seq = dropped["sid"], dropped["seq"]
    gaps = wait_for(lambda: _events(db, "sequence_gap"), timeout=30, what="sequence_gap")
    assert gaps == [
        f"orderbook_delta sid {sid}: seq {seq} expected, {seq + 1} received; "
        f"markets: {','.join(tickers)}"
    ]
    resynced = wait_for(lambda: _events(db, "book_resynced"), timeout=30, what="book_resynced")
    assert resynced == [
        f"orderbook_delta sid {sid}: fresh snapshots for {len(tickers)} markets: "
        + ",".join(tickers)
    ]
    _books_equal_the_exchange(sim, db, engine, tickers)
    assert _events(db, "sequence_gap") == gaps  # nothing else was lost, nothing resynced twice
    # the book queries say so: invalid from the gap until the resync snapshot, valid after
    with connect(db, read_only=True, timeout_s=60) as con:
        [(gap_at,)] = con.execute(
            "SELECT occurred_at FROM feed_events WHERE kind = 'sequence_gap'"
        ).fetchall()
        for t in tickers:
            broken = book_at(con, t, gap_at)
            assert not broken.valid and broken.reason and "sequence_gap" in broken.reason
            assert book_at(con, t, datetime.now(UTC)).valid

    now = datetime.now(UTC)
    with connect(db, read_only=True, timeout_s=60) as con:
        rows = coverage.coverage_intervals(
            con, since=now - timedelta(hours=1), stream_alive=True, now=now
        )
    books = [iv for iv in rows if iv.channel == "orderbook_delta"]
    assert len(books) == 1
    gap = books[0]
    assert (gap.source, gap.state, gap.reason) == ("websocket", "degraded", "sequence_gap")
    assert gap.ended_at is not None and gap.ended_at > gap.started_at
    assert gap.detail == f"sid {sid}: seq {seq} lost; markets: {','.join(tickers)}"
    # the ticker rows are as they were: live since the subscription; the socket covered the
    # whole time (a sequence gap qualifies the books, it is no hole in the feed)
    ticker = [iv for iv in rows if iv.channel == "ticker" and iv.source == "websocket"]
    assert ticker[-1].state == "live" and ticker[-1].ended_at is None
    assert ticker[-1].started_at < gap.started_at
    since_gap = coverage.summarize(rows, gap.started_at, now)
    assert since_gap.gaps == [] and since_gap.covered == 1.0


def test_a_reordered_book_frame_and_a_lost_trade(
    sim_factory: Any, engines: Any, tmp_path: Path
) -> None:
    sim = sim_factory(markets=30, rate=60, extra_args=["--book-depth-events", "1.0"])
    tickers = _open_tickers(sim)[:6]
    db = tmp_path / "k.duckdb"
    engine = _start(sim, engines, db, tickers)
    assert engine.ws_feed is not None
    windows: list[tuple[int, int, list[str] | None]] = []
    backfill = engine.ws_feed.on_trade_gap  # the engine's: the REST backfill

    def on_trade_gap(since: int, until: int, which: list[str] | None) -> object:
        windows.append((since, until, which))
        return backfill(since, until, which)

    engine.ws_feed.on_trade_gap = on_trade_gap

    sim.set_faults(reorder_frames={"channel": "orderbook_delta", "count": 1})
    swapped = _faulted(sim, "reordered", "orderbook_delta")
    first, second = swapped["seqs"]
    gaps = wait_for(lambda: _events(db, "sequence_gap"), timeout=30, what="sequence_gap")
    # the later frame came first: one gap; the late one fills it and is not a second event
    assert gaps == [
        f"orderbook_delta sid {swapped['sid']}: seq {first} expected, {second} received; "
        f"markets: {','.join(tickers)}"
    ]
    wait_for(lambda: _events(db, "book_resynced"), timeout=30, what="book_resynced")

    wait_for(
        lambda: query(db, "SELECT count(*) FROM trades")[0][0] >= 1,
        timeout=60,
        what="a trade stored",
    )
    sim.set_faults(drop_frames={"channel": "trade", "count": 1})
    lost = _faulted(sim, "dropped", "trade")
    trade_gaps = wait_for(
        lambda: [g for g in _events(db, "sequence_gap") if g.startswith("trade")],
        timeout=60,
        what="a trade sequence_gap",
    )
    assert trade_gaps == [
        f"trade sid {lost['sid']}: seq {lost['seq']} expected, {lost['seq'] + 1} received; "
        f"markets: {','.join(tickers)}"
    ]
    assert len(windows) == 1
    since, until, which = windows[0]
    assert which == tickers
    assert since <= until
    # the lost trade is in the window handed to the backfill, and it alone is not stored

    def not_stored() -> list[dict[str, Any]] | None:
        stored = {r[0] for r in query(db, "SELECT trade_id FROM trades WHERE source = 'websocket'")}
        tape = [
            ln["msg"]
            for ln in sim.read_book_ledger()
            if ln["type"] == "trade" and ln["msg"]["market_ticker"] in tickers
        ]
        # from the first trade the feed received (earlier ones were before it subscribed)
        first = next(i for i, m in enumerate(tape) if m["trade_id"] in stored)
        lost = [m for m in tape[first:] if m["trade_id"] not in stored and m["ts_ms"] <= until]
        return lost if len(lost) == 1 else None

    lost_trade = wait_for(not_stored, timeout=60, what="every other trade stored")[0]
    assert since <= lost_trade["ts_ms"] <= until
    # ... and the backfill stores it, once, from REST; its coverage row ends there
    backfilled = wait_for(
        lambda: query(db, "SELECT source FROM trades WHERE trade_id = ?", [lost_trade["trade_id"]]),
        timeout=60,
        what="the lost trade backfilled",
    )
    assert backfilled == [("http",)]
    done = wait_for(
        lambda: [r for r in feed_events(db) if r[2] == "trades_backfilled"],
        timeout=30,
        what="trades_backfilled",
    )
    now = datetime.now(UTC)
    with connect(db, read_only=True, timeout_s=60) as con:
        rows = coverage.coverage_intervals(
            con, since=now - timedelta(hours=1), stream_alive=True, now=now
        )
    (trade_row,) = [iv for iv in rows if iv.channel == "trade"]
    assert trade_row.reason == "sequence_gap" and trade_row.ended_at == done[0][0]

    _books_equal_the_exchange(sim, db, engine, tickers)
    assert len([g for g in _events(db, "sequence_gap") if g.startswith("orderbook")]) == 1


def test_all_markets_means_the_open_ones_then_those_the_lifecycle_brings(
    sim_factory: Any, engines: Any, tmp_path: Path
) -> None:
    sim = sim_factory(markets=12, rate=30, market_lifetime="20s")
    db = tmp_path / "k.duckdb"
    open_before = set(_open_tickers(sim))
    engine: Engine = engines(
        config_for(
            sim,
            db,
            channels=("orderbook_delta",),
            book_check_every_s=0,
            book_open_markets_every_s=2,
        )
    )
    feed = engine.ws_feed
    assert feed is not None
    wait_for(lambda: _events(db, "subscribe"), timeout=30, what="subscribed")
    open_after = set(_open_tickers(sim))

    def subscribed_at_start() -> set[str] | None:
        """The order-book markets now, less those the lifecycle added, plus those it removed
        (the events reach the database a moment after the feed acts: looked at until then)."""
        now_in = set(feed._book_markets)
        added = {d.removeprefix("orderbook_delta: ") for d in _events(db, "markets_added")}
        removed = {d.removeprefix("orderbook_delta: ") for d in _events(db, "markets_removed")}
        at_start = (now_in | removed) - added
        return at_start if at_start <= open_before | open_after else None

    at_start = wait_for(subscribed_at_start, timeout=30, what="only open markets subscribed")
    assert open_before & open_after <= at_start
    unopened = requests.get(
        f"{sim.rest_url}/markets", params={"status": "unopened"}, timeout=10
    ).json()["markets"]
    assert not {m["ticker"] for m in unopened} & at_start

    # the next hourly event: its markets are added when created, and get a snapshot
    fresh = wait_for(
        lambda: [
            d.removeprefix("orderbook_delta: ")
            for d in _events(db, "markets_added")
            if d.removeprefix("orderbook_delta: ") not in open_before | open_after
        ],
        timeout=60,
        what="a created market added",
    )
    wait_for(
        lambda: query(
            db, "SELECT count(*) FROM book_snapshots WHERE market_ticker = ?", [fresh[0]]
        )[0][0],
        timeout=30,
        what=f"a snapshot of {fresh[0]} stored",
    )
    # a market that closed and was determined leaves the subscription
    gone = wait_for(
        lambda: [d.removeprefix("orderbook_delta: ") for d in _events(db, "markets_removed")],
        timeout=60,
        what="a determined market removed",
    )
    assert gone[0] in open_before | open_after
    assert gone[0] not in feed._book_markets
    assert all(gone[0] not in markets for markets in list(feed.seq.sid_markets.values()))

    # an open market without a subscription (as one listed before the stream started and
    # opened on schedule since, which no lifecycle event announces) is found and added
    loop, ws = engine._loop, feed._ws
    assert loop is not None and ws is not None
    # one that stays open: not of the 20-second hourly series
    missing = sorted(t for t in at_start & set(_open_tickers(sim)) if "HOURLY" not in t)[0]
    (sid,) = list(feed.seq.sid_markets)

    def forget() -> None:  # as if it had never been subscribed
        feed._book_markets.discard(missing)
        feed.seq.books.pop(missing, None)
        feed.seq.sid_markets[sid].discard(missing)
        feed._spawn(ws.delete_markets(sid, [missing]), "test")

    loop.call_soon_threadsafe(forget)
    wait_for(
        lambda: f"orderbook_delta: {missing}" in _events(db, "markets_added"),
        timeout=30,
        what=f"{missing} found open and added",
    )
    wait_for(lambda: _live_books(engine, [missing]), timeout=30, what=f"a book of {missing}")
    assert _events(db, "sequence_gap") == []


def test_error_26_halves_the_batches_and_says_which_markets_did_not_fit(
    sim_factory: Any, engines: Any, tmp_path: Path
) -> None:
    sim = sim_factory(
        markets=30,
        rate=30,
        extra_args=["--book-depth-events", "0.3", "--max-markets-per-subscription", "4"],
    )
    tickers = _open_tickers(sim)[:6]
    db = tmp_path / "k.duckdb"
    engine: Engine = engines(
        config_for(
            sim,
            db,
            scope=Scope.of(tickers=tickers),
            channels=("orderbook_delta",),
            book_batch_size=8,
            book_check_every_s=0,
        )
    )
    wait_for(lambda: _events(db, "subscribe"), timeout=30, what="subscribed")
    splits = _events(db, "subscription_split")
    assert splits[0] == (
        "orderbook_delta: Subscription market limit exceeded (error 26) for 6 markets; "
        "batches of 3 markets from now on"
    )
    # the simulator, like Kalshi as measured, adds a repeat subscribe to the same sid: four
    # markets fit, and the two left over are named, not silently lost
    assert engine.ws_feed is not None
    subscribed = sorted(engine.ws_feed._book_markets)
    assert len(subscribed) == 4 and set(subscribed) <= set(tickers)
    left = sorted(set(tickers) - set(subscribed))
    (not_subscribed,) = _events(db, "markets_not_subscribed")
    assert not_subscribed.endswith(f"2 markets not subscribed: {','.join(left)}")
    wait_for(lambda: _live_books(engine, subscribed), timeout=30, what="the four books")
    # not fatal: the feed streams on
    stored = query(db, "SELECT count(*) FROM book_deltas")[0][0]
    wait_for(
        lambda: query(db, "SELECT count(*) FROM book_deltas")[0][0] > stored,
        timeout=60,
        what="more deltas stored",
    )
    assert engine.stats.reconnects == 0


def test_a_book_that_drifts_from_rest_is_recorded_and_resynced(
    sim_factory: Any, engines: Any, tmp_path: Path
) -> None:
    sim = sim_factory(markets=30, rate=30)
    tickers = _open_tickers(sim)[:3]
    db = tmp_path / "k.duckdb"
    engine = _start(sim, engines, db, tickers, channels=("orderbook_delta",), book_check_every_s=1)
    sim.set_faults(pause_updates=True)
    rest = {t: _rest_book(sim, t) for t in tickers}
    wait_for(lambda: _live_books(engine, tickers) == rest, timeout=30, what="books equal REST's")
    # a bug of ours, say, puts 7 contracts too many on one level of the live book
    ticker = next(t for t in tickers if rest[t])
    (side, price), size = sorted(rest[ticker].items())[0]
    feed, loop = engine.ws_feed, engine._loop
    assert feed is not None and loop is not None

    def drift() -> None:
        book = feed.seq.books[ticker]
        (book.yes if side == "yes" else book.no)[price] = size + 7

    loop.call_soon_threadsafe(drift)
    mismatch = wait_for(lambda: _events(db, "book_mismatch"), timeout=30, what="book_mismatch")
    assert mismatch == [f"{ticker}: {side} {price} REST {size}, stream {size + 7}"]
    resynced = wait_for(lambda: _events(db, "book_resynced"), timeout=30, what="book_resynced")
    assert resynced[0].endswith(f"fresh snapshots for 1 markets: {ticker}")
    wait_for(lambda: _live_books(engine, tickers) == rest, timeout=30, what="the book mended")
    assert _events(db, "sequence_gap") == []


def test_a_buffer_overflow_is_a_sequence_gap_until_the_books_are_resubscribed_and_snapshotted(
    sim_factory: Any, engines: Any, tmp_path: Path
) -> None:
    """Error 25: the exchange dropped frames of the subscription and ended it. The loss is a
    `sequence_gap` of the old sid (coverage `degraded` until its markets' fresh snapshots on the
    new subscription, `book_resynced`), and every book is invalid from it to its new snapshot."""
    sim = sim_factory(markets=30, rate=30)
    tickers = _open_tickers(sim)[:4]
    db = tmp_path / "k.duckdb"
    engine = _start(sim, engines, db, tickers)
    assert engine.ws_feed is not None
    (old_sid,) = list(engine.ws_feed.seq.sid_markets)
    sim.set_faults(buffer_overflow=True)  # error 25 on every market-data subscription
    again = wait_for(
        lambda: [d for d in _events(db, "resubscribe") if d.startswith("orderbook_delta")],
        timeout=30,
        what="the books resubscribed",
    )
    assert again[0].startswith(f"orderbook_delta sid {old_sid}: ")
    assert "error 25" in again[0] or "buffer overflow" in again[0].lower()
    wait_for(
        lambda: [s for s in engine.ws_feed.seq.sid_markets if s != old_sid],  # type: ignore[union-attr]
        timeout=30,
        what="a new order-book sid",
    )
    resynced = wait_for(lambda: _events(db, "book_resynced"), timeout=30, what="book_resynced")
    assert resynced == [
        f"orderbook_delta sid {old_sid}: fresh snapshots for {len(tickers)} markets: "
        + ",".join(tickers)
    ]
    _books_equal_the_exchange(sim, db, engine, tickers)
    assert engine.stats.reconnects == 0
    # the trade subscription was ended too: its own gap (pinned by the trade test below)
    [gap] = [g for g in _events(db, "sequence_gap") if not g.startswith("trade sid ")]
    found = coverage.ENDED_GAP.match(gap)
    assert found is not None, gap
    assert gap == (
        f"orderbook_delta sid {old_sid}: seq {found.group(3)} expected, none received "
        f"(buffer overflow); markets: {','.join(tickers)}"
    )
    assert int(found.group(3)) > len(tickers)  # after the snapshots and some deltas
    with connect(db, read_only=True, timeout_s=60) as con:
        order = con.execute(
            "SELECT kind, occurred_at FROM feed_events WHERE kind IN ('sequence_gap', "
            "'resubscribe', 'book_resynced') AND detail LIKE 'orderbook_delta sid%' "
            "ORDER BY occurred_at"
        ).fetchall()
        assert [k for k, _ in order] == ["sequence_gap", "resubscribe", "book_resynced"]
        gap_at, resynced_at = order[0][1], order[2][1]
        for t in tickers:
            [(fresh_at,)] = con.execute(
                "SELECT min(received_at) FROM book_snapshots WHERE market_ticker = ? "
                "AND received_at > ?",
                [t, gap_at],
            ).fetchall()
            assert gap_at < fresh_at <= resynced_at
            assert book_at(con, t, gap_at - timedelta(microseconds=1)).valid
            for at in (gap_at, fresh_at - timedelta(microseconds=1)):
                inside = book_at(con, t, at)
                assert not inside.valid and inside.reason is not None
                assert inside.reason.startswith("sequence_gap at ")
                assert inside.reason.endswith(gap)
                [(valid,)] = con.execute(
                    "SELECT valid FROM book_validity(?, ?)", [t, at]
                ).fetchall()
                assert not valid
            assert book_at(con, t, fresh_at).valid
            [(valid,)] = con.execute(
                "SELECT valid FROM book_validity(?, ?)", [t, fresh_at]
            ).fetchall()
            assert valid

    now = datetime.now(UTC)
    with connect(db, read_only=True, timeout_s=60) as con:
        rows = coverage.coverage_intervals(
            con, since=now - timedelta(hours=1), stream_alive=True, now=now
        )
    books = [iv for iv in rows if iv.channel == "orderbook_delta"]
    assert [(iv.state, iv.reason, iv.started_at, iv.ended_at) for iv in books] == [
        ("degraded", "sequence_gap", gap_at, resynced_at)
    ]
    assert books[0].detail == (
        f"sid {old_sid}: seq {found.group(3)} on lost (subscription ended: buffer overflow); "
        f"markets: {','.join(tickers)}"
    )


def test_a_resync_the_server_refuses_falls_back_to_delete_and_add(
    sim_factory: Any, engines: Any, tmp_path: Path
) -> None:
    sim = sim_factory(markets=30, rate=30)
    tickers = _open_tickers(sim)[:3]
    other = _open_tickers(sim)[5]  # not on the subscription: get_snapshot is refused (14)
    db = tmp_path / "k.duckdb"
    engine = _start(sim, engines, db, tickers, channels=("orderbook_delta",))
    feed, loop = engine.ws_feed, engine._loop
    assert feed is not None and loop is not None and feed._ws is not None
    (sid,) = list(feed.seq.sid_markets)
    ws = feed._ws

    def resync() -> None:  # as a book_invalid of that market would
        feed._want_resync(ws, sid, feed.seq.invalidate(sid, [other]))

    loop.call_soon_threadsafe(resync)
    fallback = wait_for(lambda: _events(db, "resync_fallback"), timeout=30, what="the fallback")
    assert fallback[0].startswith(f"orderbook_delta sid {sid}: get_snapshot refused (")
    assert fallback[0].endswith("deleted and added 1 markets again")
    resynced = wait_for(lambda: _events(db, "book_resynced"), timeout=30, what="book_resynced")
    assert resynced == [f"orderbook_delta sid {sid}: fresh snapshots for 1 markets: {other}"]
    assert not [d for d in _events(db, "server_error")]  # the refusal was the caller's to record
    _books_equal_the_exchange(sim, db, engine, [*tickers, other])


def test_a_book_the_recorder_stopped_following_is_invalid_from_its_removal(
    sim_factory: Any, engines: Any, tmp_path: Path
) -> None:
    """A determined market leaves the order books (`markets_removed`): its book from then on is
    the last one the recorder held, not the exchange's, and the queries say so."""
    sim = sim_factory(markets=12, rate=30, market_lifetime="20s")
    open_now = _open_tickers(sim)
    hourly = [t for t in open_now if "HOURLY" in t][:3]
    steady = [t for t in open_now if "HOURLY" not in t][:2]
    assert hourly and steady
    db = tmp_path / "k.duckdb"
    _start(sim, engines, db, hourly + steady, channels=("orderbook_delta",))
    removed = wait_for(
        lambda: query(
            db,
            "SELECT detail, occurred_at FROM feed_events WHERE kind = 'markets_removed' "
            "ORDER BY occurred_at",
        ),
        timeout=90,
        what="a determined market removed from the order books",
    )
    detail, removed_at = removed[0]
    gone = detail.removeprefix("orderbook_delta: ")
    assert detail.startswith("orderbook_delta: ") and gone in hourly
    with connect(db, read_only=True, timeout_s=60) as con:
        [(first_snapshot,)] = con.execute(
            "SELECT min(received_at) FROM book_snapshots WHERE market_ticker = ?", [gone]
        ).fetchall()
        assert first_snapshot < removed_at
        before = book_at(con, gone, removed_at - timedelta(milliseconds=1))
        assert before.valid and before.reason is None
        for at in (removed_at, removed_at + timedelta(seconds=5), datetime.now(UTC)):
            after = book_at(con, gone, at)
            assert not after.valid and after.snapshot_at == before.snapshot_at
            assert after.reason is not None
            assert after.reason.startswith("markets_removed at ")
            assert after.reason.endswith(f": orderbook_delta: {gone}")
            # the macros agree: every level row and the validity row say invalid, and why
            rows = con.execute("SELECT DISTINCT valid FROM book_at(?, ?)", [gone, at]).fetchall()
            assert rows in ([(False,)], [])
            [(valid, reason)] = con.execute(
                "SELECT valid, reason FROM book_validity(?, ?)", [gone, at]
            ).fetchall()
            assert not valid and reason.startswith("markets_removed at ")
            assert reason.endswith(f": orderbook_delta: {gone}")
        # the markets still followed are not touched by it
        for t in steady:
            assert book_at(con, t, datetime.now(UTC)).valid


def test_an_unasked_error_14_on_a_book_subscription_is_recorded_and_its_books_resynced(
    sim_factory: Any, engines: Any, tmp_path: Path
) -> None:
    """Error 14 (Market Ticker required) with the sid of an order-book subscription, answering
    no command: Kalshi says that subscription lacks its markets, so its books can no longer be
    trusted. The feed records it, marks the books invalid, resyncs them, and goes on."""
    sim = sim_factory(markets=30, rate=30)
    tickers = _open_tickers(sim)[:3]
    db = tmp_path / "k.duckdb"
    engine = _start(sim, engines, db, tickers)
    assert engine.ws_feed is not None
    (sid,) = list(engine.ws_feed.seq.sid_markets)
    state = sim.set_faults(subscription_error={"channel": "orderbook_delta", "code": 14})
    assert state["applied"] == {"subscription_error": 1}
    errors = wait_for(lambda: _events(db, "server_error"), timeout=30, what="server_error")
    assert len(errors) == 1
    assert errors[0].startswith("Kalshi WebSocket error 14 Market Ticker required")
    assert f"orderbook_delta sid {sid} ({len(tickers)} markets)" in errors[0]
    assert "bug" not in errors[0]
    assert _events(db, "book_invalid") == [
        f"orderbook_delta sid {sid}: error 14 (Market Ticker required) unasked on the "
        f"subscription; markets: {','.join(tickers)}"
    ]
    resynced = wait_for(lambda: _events(db, "book_resynced"), timeout=30, what="book_resynced")
    assert resynced == [
        f"orderbook_delta sid {sid}: fresh snapshots for {len(tickers)} markets: "
        + ",".join(tickers)
    ]
    _books_equal_the_exchange(sim, db, engine, tickers)
    # the error took its seq like any numbered frame: no gap; nothing reconnected
    assert _events(db, "sequence_gap") == [] and engine.stats.reconnects == 0
    assert list(engine.ws_feed.seq.sid_markets) == [sid]
    with connect(db, read_only=True, timeout_s=60) as con:
        [(invalid_at,)] = con.execute(
            "SELECT occurred_at FROM feed_events WHERE kind = 'book_invalid'"
        ).fetchall()
        for t in tickers:
            [(fresh_at,)] = con.execute(
                "SELECT min(received_at) FROM book_snapshots WHERE market_ticker = ? "
                "AND received_at > ?",
                [t, invalid_at],
            ).fetchall()
            inside = book_at(con, t, invalid_at)
            assert not inside.valid and inside.reason is not None
            assert inside.reason.startswith("book_invalid at ")
            [(valid,)] = con.execute(
                "SELECT valid FROM book_validity(?, ?)", [t, invalid_at]
            ).fetchall()
            assert not valid
            assert book_at(con, t, fresh_at).valid
    # the same error on the trade subscription is recorded as it is, and touches no book
    trade_sid = engine.ws_feed._sids["trade"]
    sim.set_faults(subscription_error={"channel": "trade", "code": 14})
    errors = wait_for(
        lambda: _events(db, "server_error")[1:], timeout=30, what="a second server_error"
    )
    assert errors == [
        f"Kalshi WebSocket error 14 Market Ticker required: Market Ticker required (sid "
        f"{trade_sid})"
    ]
    assert len(_events(db, "book_invalid")) == 1 and engine.stats.reconnects == 0
    assert _events(db, "sequence_gap") == []


def test_a_buffer_overflow_on_the_trade_subscription_is_a_gap_backfilled_from_rest(
    sim_factory: Any, engines: Any, tmp_path: Path
) -> None:
    """Error 25 ends the trade subscription too: the trades from the last one received until the
    new subscription streams are a `sequence_gap` of the old sid, backfilled from REST once
    subscribed again; coverage `degraded` until the backfill, and no trade missing."""
    sim = sim_factory(markets=30, rate=60)
    tickers = _open_tickers(sim)[:6]
    db = tmp_path / "k.duckdb"
    engine: Engine = engines(
        config_for(sim, db, scope=Scope.of(tickers=tickers), channels=("ticker", "trade"))
    )
    wait_for(lambda: _events(db, "subscribe"), timeout=30, what="subscribed")
    feed = engine.ws_feed
    assert feed is not None
    windows: list[tuple[int, int, list[str] | None]] = []
    backfill = feed.on_trade_gap

    def on_trade_gap(since: int, until: int, which: list[str] | None) -> object:
        windows.append((since, until, which))
        return backfill(since, until, which)

    feed.on_trade_gap = on_trade_gap
    wait_for(
        lambda: query(db, "SELECT count(*) FROM trades")[0][0] >= 1,
        timeout=60,
        what="a trade stored",
    )
    old_sid = feed._sids["trade"]
    sim.set_faults(buffer_overflow=True)
    [gap] = wait_for(lambda: _events(db, "sequence_gap"), timeout=30, what="sequence_gap")
    found = coverage.ENDED_GAP.match(gap)
    assert found is not None, gap
    assert gap == (
        f"trade sid {old_sid}: seq {found.group(3)} expected, none received (buffer overflow); "
        f"markets: {','.join(tickers)}"
    )
    done = wait_for(
        lambda: [r for r in feed_events(db) if r[2] == "trades_backfilled"],
        timeout=60,
        what="trades_backfilled",
    )
    [(since, until, which)] = windows
    assert which == tickers and since <= until
    resubscribed = [d for d in _events(db, "resubscribe") if d.startswith("trade")]
    assert resubscribed and feed._sids["trade"] != old_sid
    # every trade of the markets from the first received to the window's end is stored:
    # those the socket missed from REST

    def missing() -> list[dict[str, Any]]:
        stored = {r[0]: r[1] for r in query(db, "SELECT trade_id, source FROM trades")}
        tape = [
            ln["msg"]
            for ln in sim.read_book_ledger()
            if ln["type"] == "trade" and ln["msg"]["market_ticker"] in tickers
        ]
        first = next(i for i, m in enumerate(tape) if m["trade_id"] in stored)
        return [m for m in tape[first:] if m["trade_id"] not in stored and m["ts_ms"] <= until]

    wait_for(lambda: missing() == [], timeout=60, what="every trade stored")
    now = datetime.now(UTC)
    with connect(db, read_only=True, timeout_s=60) as con:
        [(gap_at,)] = con.execute(
            "SELECT occurred_at FROM feed_events WHERE kind = 'sequence_gap'"
        ).fetchall()
        [(again_at,)] = con.execute(
            "SELECT occurred_at FROM feed_events WHERE kind = 'resubscribe' "
            "AND detail LIKE 'trade%'"
        ).fetchall()
        # the window runs from the last trade received before the error to after the new
        # subscription was made (in whole ms, as the backfill asks: the same ms counts)
        assert since <= gap_at.timestamp() * 1000 and until >= int(again_at.timestamp() * 1000)
        rows = coverage.coverage_intervals(
            con, since=now - timedelta(hours=1), stream_alive=True, now=now
        )
    assert [
        (iv.state, iv.reason, iv.started_at, iv.ended_at) for iv in rows if iv.channel == "trade"
    ] == [("degraded", "sequence_gap", gap_at, done[0][0])]
    assert engine.stats.reconnects == 0

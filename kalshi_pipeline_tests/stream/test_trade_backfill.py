"""Trade backfill against the simulator: trades the socket lost (dropped `trade` frames) are
fetched from `GET /markets/trades`, landed as raw pages and stored by the writer next to those
the socket delivered, every trade of the simulator's ledger exactly once; a failing REST API is
retried and then recorded as `backfill_failed`; replay of the landing log gives the same table."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kalshi_pipeline.kalshi.messages import Trade, decode_frame
from kalshi_pipeline.kalshi.rest import RestClient
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.kalshi.websocket import KalshiWebSocket
from kalshi_pipeline.stream.backfill import CLOSED, PER_MARKET_QUERIES, TradeBackfill
from kalshi_pipeline.stream.events import FeedEvents
from kalshi_pipeline.stream.landing import Kind, LandingLog, Source
from kalshi_pipeline.stream.pages import TradesPageMeta, iso_ms
from kalshi_pipeline.stream.replay import replay
from kalshi_pipeline.stream.stats import EngineStats
from kalshi_pipeline.stream.writer import Writer
from kalshi_pipeline.warehouse.owner import Owner
from kalshi_pipeline_tests.helpers import query, wait_for

pytestmark = pytest.mark.timeout(150)

D = Decimal
TRADES_SQL = (
    "SELECT trade_id, market_ticker, source, yes_price, no_price, count, taker_side, "
    "taker_outcome_side, taker_book_side, is_block_trade, exchange_ts, received_at, sent_at, "
    "sid, seq, landing_segment, landing_offset FROM trades ORDER BY trade_id"
)


def _settings(sim: Any) -> KalshiSettings:
    return KalshiSettings.for_env("local", rest_url=sim.rest_url, ws_url=sim.ws_url)


def _record_trades(sim: Any, landing: LandingLog, *, dropped: int, received: int) -> set[str]:
    """Land the `trade` channel (every market) until `received` trades came, the simulator
    dropping `dropped` frames after the first few; then freeze the exchange. Returns the trade
    ids received."""
    settings = _settings(sim)
    seen: set[str] = set()

    async def record() -> None:
        ws = KalshiWebSocket(settings.ws_url, settings.signer(), command_timeout_s=10)
        await ws.connect()
        try:
            await ws.subscribe(["trade"])
            while len(seen) < received:
                frame = await asyncio.wait_for(ws.recv(), timeout=30)
                landing.append(Kind.WS_FRAME, Source.WEBSOCKET, frame.data, frame.received_ns)
                msg = decode_frame(frame.data)
                if isinstance(msg, Trade):
                    seen.add(msg.trade_id)
                    if len(seen) == 3 and dropped:
                        sim.set_faults(drop_frames={"channel": "trade", "count": dropped})
            sim.set_faults(pause_updates=True)
        finally:
            await ws.close()

    asyncio.run(asyncio.wait_for(record(), timeout=90))
    return seen


def _ledger_trades(sim: Any) -> dict[str, dict[str, Any]]:
    """Every trade the simulator made, once its ledger holds them all."""
    total = sim.stats()["trades"]

    def complete() -> list[dict[str, Any]] | None:
        lines = [x for x in sim.read_book_ledger() if x["type"] == "trade"]
        return lines if len(lines) >= total else None

    lines = wait_for(complete, timeout=30, what="every trade in the book ledger")
    return {line["msg"]["trade_id"]: line["msg"] for line in lines}


def _load(writer: Writer, landing: LandingLog) -> None:
    landing.flush()
    wait_for(lambda: writer.load_once() == 0, timeout=60, what="the landing log loaded")


def _events(db: Path, kind: str) -> list[str]:
    sql = "SELECT detail FROM feed_events WHERE kind = ? ORDER BY occurred_at"
    return [d for (d,) in query(db, sql, [kind])]


def test_backfill_stores_only_the_trades_the_socket_lost_and_replay_gives_the_same_table(
    sim_factory: Callable[..., Any], tmp_path: Path
) -> None:
    sim = sim_factory(markets=12, rate=60)
    folder, db = tmp_path / "k.landing", tmp_path / "k.duckdb"
    landing = LandingLog(folder)
    seen = _record_trades(sim, landing, dropped=4, received=25)
    ledger = _ledger_trades(sim)
    lost = set(ledger) - seen
    assert len(lost) >= 4  # the dropped frames, and any trade made before the subscription
    writer = Writer(Owner(db), folder, landing=landing)
    backfill = TradeBackfill(_settings(sim), landing, FeedEvents(landing, EngineStats()))
    try:
        _load(writer, landing)  # the socket's trades are stored before the backfill runs
        assert query(db, "SELECT count(*) FROM trades")[0][0] == len(seen)

        # two markets (one query each), all but one (one query for every market, of which the
        # listed are kept), then every market: the window covers the simulator's whole life,
        # so every trade of its ledger is in it
        since = min(m["ts_ms"] for m in ledger.values())
        until = time.time_ns() // 1_000_000
        lost_in = sorted({ledger[t]["market_ticker"] for t in lost})
        two = lost_in[:2]
        markets = [m.ticker for m in RestClient(_settings(sim)).get_markets()]
        left_out = (lost_in[2:] or sorted(set(markets) - set(two)))[-1]
        all_but_one = [t for t in markets if t != left_out]
        assert len(all_but_one) > PER_MARKET_QUERIES
        some = backfill.on_trade_gap(since, until, two).result(timeout=60)
        most = backfill.on_trade_gap(since, until, set(all_but_one)).result(timeout=60)
        everything = backfill.on_trade_gap(since, until, None).result(timeout=60)
        _load(writer, landing)
    finally:
        backfill.close()
        writer.close()
    landing.close()

    assert some.ok and most.ok and everything.ok
    assert (some.pages, most.pages, everything.pages) == (len(two), 1, 1)
    assert most.trades == everything.trades == len(ledger)  # a sweep, before keeping the listed
    stored = query(db, TRADES_SQL)
    assert sorted(r[0] for r in stored) == sorted(ledger)  # every ledger trade, exactly once
    for tid, ticker, source, yes, no, count, *_ in stored:
        m = ledger[tid]
        assert (ticker, yes, no, count) == (
            m["market_ticker"],
            D(m["yes_price_dollars"]),
            D(m["no_price_dollars"]),
            D(m["count_fp"]),
        )
        assert source == ("http" if tid in lost else "websocket")

    def of(tickers: list[str], trades: Iterable[str]) -> set[str]:
        return {t for t in trades if ledger[t]["market_ticker"] in tickers}

    window = f"between {iso_ms(since)} and {iso_ms(until)}"
    new_of_most = of(all_but_one, lost) - of(two, lost)
    assert _events(db, "trades_backfilled") == [
        f"trade: {len(of(two, ledger))} trades ({len(of(two, lost))} new) {window}",
        f"trade: {len(of(all_but_one, ledger))} trades ({len(new_of_most)} new) {window}",
        f"trade: {len(ledger)} trades ({len(of([left_out], lost))} new) {window}",
    ]

    replayed = tmp_path / "replayed.duckdb"
    replay(folder, replayed)
    assert query(replayed, TRADES_SQL) == stored
    assert _events(replayed, "trades_backfilled") == _events(db, "trades_backfilled")


@pytest.mark.parametrize("fault", ["http_5xx_s", "http_429_s"])
def test_a_failing_rest_api_is_retried_then_recorded_as_backfill_failed_and_nothing_is_lost(
    sim_factory: Callable[..., Any], tmp_path: Path, fault: str
) -> None:
    sim = sim_factory(markets=6, rate=30)
    folder, db = tmp_path / "k.landing", tmp_path / "k.duckdb"
    landing = LandingLog(folder)
    seen = _record_trades(sim, landing, dropped=2, received=8)
    ledger = _ledger_trades(sim)
    since, until = min(m["ts_ms"] for m in ledger.values()), time.time_ns() // 1_000_000
    writer = Writer(Owner(db), folder, landing=landing)
    backfill = TradeBackfill(
        _settings(sim),
        landing,
        FeedEvents(landing, EngineStats()),
        attempts=2,
        retry_pause_s=0.1,
        client_options={"max_retries": 2, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
    )
    try:
        sim.set_faults(pause_updates=True, **{fault: 60})
        failed = backfill.on_trade_gap(since, until).result(timeout=60)
        _load(writer, landing)
        assert not failed.ok
        assert failed.attempts == 2 and failed.retries == 4  # 2 attempts, 2 retries each
        status = "429" if fault == "http_429_s" else "HTTP 50"
        (detail,) = _events(db, "backfill_failed")
        assert detail.startswith(f"trade: the trades between {iso_ms(since)} and {iso_ms(until)}")
        assert "after 2 attempts (4 requests retried)" in detail and status in detail
        # nothing the socket delivered is lost, and the same window backfills once REST is back
        assert {r[0] for r in query(db, "SELECT trade_id FROM trades")} == seen
        sim.set_faults(pause_updates=True)
        again = backfill.on_trade_gap(since, until).result(timeout=60)
        _load(writer, landing)
    finally:
        backfill.close()
        writer.close()
    landing.close()
    assert again.ok
    stored = query(db, "SELECT trade_id FROM trades")
    assert sorted(r[0] for r in stored) == sorted(ledger)
    assert len(_events(db, "trades_backfilled")) == 1


def test_a_backfill_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        TradeBackfill._checked(2_000, 1_000, None)
    with pytest.raises(ValueError, match="must be a list of market tickers"):
        TradeBackfill._checked(1_000, 2_000, "KXA-1")


def test_closing_stops_a_backfill_stuck_in_retries_and_refuses_new_ones(
    sim_factory: Callable[..., Any], tmp_path: Path
) -> None:
    sim = sim_factory(markets=4, rate=10)
    folder, db = tmp_path / "k.landing", tmp_path / "k.duckdb"
    landing = LandingLog(folder)
    backfill = TradeBackfill(
        _settings(sim),
        landing,
        FeedEvents(landing, EngineStats()),
        client_options={"max_retries": 1000, "backoff_base_s": 0.05, "backoff_cap_s": 0.2},
    )
    sim.set_faults(http_5xx_s=120)
    until = time.time_ns() // 1_000_000
    stuck = backfill.on_trade_gap(until - 60_000, until)
    wait_for(lambda: sim.stats()["rest_5xx"] >= 3, timeout=30, what="the backfill retrying")
    started = time.monotonic()
    backfill.close()
    assert time.monotonic() - started < 10  # not the 1,000 retries
    result = stuck.result(timeout=1)
    assert not result.ok and result.error == f"{CLOSED} during attempt 1"
    late = backfill.on_trade_gap(until - 60_000, until)
    assert late.done() and not late.result().ok and late.result().error == CLOSED
    writer = Writer(Owner(db), folder, landing=landing)
    try:
        _load(writer, landing)
    finally:
        writer.close()
    landing.close()
    (detail,) = _events(db, "backfill_failed")
    assert detail.endswith(f"{CLOSED} during attempt 1") and "requests retried" in detail


def test_an_unreadable_trades_page_is_recorded_and_costs_nothing_else(tmp_path: Path) -> None:
    folder, db = tmp_path / "k.landing", tmp_path / "k.duckdb"
    landing = LandingLog(folder)
    meta = TradesPageMeta(
        backfill_id="b1", attempt=1, page=1, since_ms=0, until_ms=2_000, tickers=["A"], last=True
    )
    good = (
        b'{"trade_id":"t1","ticker":"A","yes_price_dollars":"0.3600","no_price_dollars":"0.6400",'
        b'"count_fp":"2.00","taker_side":"yes","created_time":"1970-01-01T00:00:01.5Z"}'
    )
    for payload in (
        b'{"trades":[]}',  # no meta line
        b"not json\n" + b'{"trades":[],"cursor":""}',
        msgspec.json.encode(meta) + b"\n" + b'{"trades": "none"}',
        msgspec.json.encode(meta) + b"\n" + b'{"trades":[' + good + b',{"trade_id":"t2"},'
        b'{"trade_id":"t3","ticker":"B","created_time":"1970-01-01T00:00:01Z"}],"cursor":""}',
    ):
        landing.append(Kind.TRADES_PAGE, Source.HTTP, payload)
    writer = Writer(Owner(db), folder, landing=landing)
    try:
        _load(writer, landing)
    finally:
        writer.close()
    landing.close()
    # the good trade of market A stored; B's is not asked for (tickers=["A"]); t2 unreadable
    assert query(db, "SELECT trade_id, source, yes_price, exchange_ts FROM trades") == [
        ("t1", "http", D("0.3600"), query(db, "SELECT to_timestamp(1.5)")[0][0])
    ]
    errors = _events(db, "parse_error")
    assert len(errors) == 4
    assert "without meta line" in errors[0] and "GET /markets/trades body" in errors[2]
    assert "trades[1] skipped" in errors[3]
    assert _events(db, "trades_backfilled") == [
        "trade: 1 trades (1 new) between 1970-01-01T00:00:00.000Z and 1970-01-01T00:00:02.000Z"
    ]


def test_a_backfill_asked_for_from_the_event_loop_runs_beside_it(
    sim_factory: Callable[..., Any], tmp_path: Path
) -> None:
    sim = sim_factory(markets=4, rate=10)
    landing = LandingLog(tmp_path / "k.landing")
    backfill = TradeBackfill(_settings(sim), landing, FeedEvents(landing, EngineStats()))
    until = time.time_ns() // 1_000_000
    sim.set_faults(slow_ms=1500)  # every REST answer takes 1.5 s

    async def feed() -> tuple[int, Any]:
        future = asyncio.wrap_future(backfill.on_trade_gap(until - 60_000, until))
        turns = 0
        while not future.done():  # the loop keeps running while the backfill waits on HTTP
            await asyncio.sleep(0.05)
            turns += 1
        return turns, future.result()

    try:
        turns, result = asyncio.run(asyncio.wait_for(feed(), timeout=60))
    finally:
        backfill.close()
        landing.close()
    assert result.ok and result.pages == 1
    assert turns >= 5

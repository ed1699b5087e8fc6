"""`RestClient.get_orderbooks` and `iter_trades` against the simulator (§4.4, §4.6), and the
decoders of their bodies: many books in few requests, equal to the per-market endpoint; the
trade tape paged through a window, equal to the simulator's ledger."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from kalshi_pipeline.kalshi.errors import FrameDecodeError
from kalshi_pipeline.kalshi.messages import decode_orderbooks, decode_trades_page
from kalshi_pipeline.kalshi.rest import RestClient
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)

D = Decimal


def rest_requests(sim: SimulatorProcess) -> int:
    return int(sim.stats()["rest_requests"])


@pytest.fixture
def paused(sim: SimulatorProcess) -> Iterator[SimulatorProcess]:
    """The shared simulator with its exchange frozen (no book change, no trade) once every
    trade so far is in the ledger, so REST answers can be compared call with call."""
    wait_for(lambda: sim.stats()["trades"] >= 30, timeout=60, what="30 trades on the tape")
    sim.set_faults(pause_updates=True)
    trades = sim.stats()["trades"]
    wait_for(
        lambda: sum(1 for line in sim.read_book_ledger() if line["type"] == "trade") >= trades,
        timeout=30,
        what="every trade in the book ledger",
    )
    return sim


def test_get_orderbooks_equals_the_per_market_endpoint_for_150_tickers_in_two_requests(
    paused: SimulatorProcess, settings: KalshiSettings
) -> None:
    with RestClient(settings) as client:
        tickers = [m.ticker for m in client.get_markets()][:150]
        assert len(tickers) == 150
        before = rest_requests(paused)
        books = client.get_orderbooks(tickers)
        assert rest_requests(paused) - before == 2  # 100 + 50 tickers
        one_by_one = {t: client.get_orderbook(t) for t in tickers}

    assert list(books) == tickers
    assert books == one_by_one
    two_sided = [b for b in books.values() if b.yes and b.no]
    assert len(two_sided) >= 50, "too few books with levels on both sides to compare"
    for book in two_sided:
        for price, count in (*book.yes, *book.no):
            assert isinstance(price, Decimal) and isinstance(count, Decimal)
            assert D(0) < price < D(1) and count > 0
            assert price == price.quantize(D("0.0001"))
        # ascending, best bid last (§4.4), as the per-market endpoint sends them
        assert [p for p, _ in book.yes] == sorted(p for p, _ in book.yes)


def test_get_orderbooks_keeps_the_best_levels_at_a_depth_and_leaves_out_unknown_tickers(
    paused: SimulatorProcess, settings: KalshiSettings
) -> None:
    with RestClient(settings) as client:
        tickers = [m.ticker for m in next(client.iter_market_pages(limit=20)).markets]
        full = client.get_orderbooks(tickers)
        top2 = client.get_orderbooks([*tickers, "NO-SUCH-MARKET", tickers[0]], depth=2)

    assert list(top2) == tickers  # asked once each; the unknown market is absent
    for t in tickers:
        assert top2[t].yes == full[t].yes[-2:]
        assert top2[t].no == full[t].no[-2:]


def test_bad_book_and_trade_arguments_are_refused_before_anything_is_sent(
    sim: SimulatorProcess, settings: KalshiSettings
) -> None:
    with RestClient(settings) as client:
        before = rest_requests(sim)
        with pytest.raises(ValueError, match="depth=101"):
            client.get_orderbooks(["A"], depth=101)
        with pytest.raises(ValueError, match="not a market ticker"):
            client.get_orderbooks(["A,B"])
        with pytest.raises(ValueError, match="seconds, not milliseconds"):
            list(client.iter_trades(min_ts=1_781_159_489_957))
        with pytest.raises(ValueError, match="min_ts=20 is after max_ts=10"):
            list(client.iter_trades(min_ts=20, max_ts=10))
        with pytest.raises(ValueError, match="limit=1001"):
            list(client.iter_trades(limit=1001))
        assert client.get_orderbooks([]) == {}
        assert rest_requests(sim) == before


def test_iter_trades_pages_through_a_window_and_equals_the_ledgers_trades(
    paused: SimulatorProcess, settings: KalshiSettings
) -> None:
    ledger = [line["msg"] for line in paused.read_book_ledger() if line["type"] == "trade"]
    seconds = sorted({m["ts"] for m in ledger})
    assert len(seconds) >= 3, "the trades span too few seconds for a window inside them"
    min_ts, max_ts = seconds[1], seconds[-2]  # a window that leaves trades out at both ends
    expected = {m["trade_id"]: m for m in ledger if min_ts <= m["ts"] <= max_ts}
    assert 0 < len(expected) < len(ledger)

    with RestClient(settings) as client:
        before = rest_requests(paused)
        trades = list(client.iter_trades(min_ts=min_ts, max_ts=max_ts, limit=7))
        requests_sent = rest_requests(paused) - before
        one_market = next(iter(expected.values()))["market_ticker"]
        of_one = list(client.iter_trades(min_ts=min_ts, max_ts=max_ts, ticker=one_market))

    assert requests_sent == -(-len(expected) // 7)  # full pages, then the one with cursor ""
    assert len(trades) == len({t.trade_id for t in trades}) == len(expected)
    for t in trades:
        m = expected[t.trade_id]
        assert t.market_ticker == m["market_ticker"]
        assert t.yes_price == D(m["yes_price_dollars"])
        assert t.no_price == D(m["no_price_dollars"])
        assert t.count == D(m["count_fp"])
        assert t.taker_outcome_side == m["taker_outcome_side"]
        assert t.taker_book_side == m["taker_book_side"]
        assert t.exchange_ts_ms == m["ts_ms"]
        assert t.sid is None and t.seq is None
    times = [t.exchange_ts_ms or 0 for t in trades]
    assert times == sorted(times, reverse=True)  # newest first
    assert {t.trade_id for t in of_one} == {
        tid for tid, m in expected.items() if m["market_ticker"] == one_market
    }


# --------------------------------------------------------------------------- bodies


def test_one_unreadable_book_does_not_cost_the_others() -> None:
    body = (
        b'{"orderbooks":['
        b'{"ticker":"A","orderbook_fp":{"yes_dollars":[["0.4700","3.00"]],"no_dollars":null}},'
        b'{"orderbook_fp":{}},'
        b'{"ticker":"B","orderbook_fp":{"yes_dollars":[["0.4700","-3.00"],["1.2","1.00"]]}},'
        b'{"ticker":"C","orderbook":{"yes":[[45,10]],"no":[[50,2]]}}]}'
    )
    page = decode_orderbooks(body)
    assert list(page.books) == ["A", "B", "C"]
    assert page.books["A"].yes == ((D("0.4700"), D("3.00")),) and page.books["A"].no == ()
    # a negative size kept as received, an impossible price left out, each with a note
    assert page.books["B"].yes == ((D("0.4700"), D("-3.00")),)
    assert len(page.books["B"].notes) == 2
    assert page.books["C"].yes == ((D("0.45"), D(10)),)  # the legacy cents shape
    assert len(page.skipped) == 1 and "orderbooks[1]" in page.skipped[0]
    with pytest.raises(FrameDecodeError, match="GET /markets/orderbooks body"):
        decode_orderbooks(b'{"orderbooks": 7}')


def test_one_unreadable_trade_does_not_cost_the_page() -> None:
    body = (
        b'{"trades":['
        b'{"trade_id":"t1","ticker":"A","yes_price_dollars":"0.3600","no_price_dollars":"0.6400",'
        b'"count_fp":"136.00","taker_side":"no","created_time":"2026-06-11T06:31:29.957081Z"},'
        b'{"trade_id":"t2"},'
        b'{"trade_id":"t3","ticker":"B","yes_price_dollars":0.5,"count_fp":"1.00",'
        b'"created_time":"yesterday"}],"cursor":"abc"}'
    )
    page = decode_trades_page(body)
    assert page.cursor == "abc"
    assert [t.trade_id for t in page.trades] == ["t1", "t3"]
    t1, t3 = page.trades
    assert (t1.market_ticker, t1.yes_price, t1.count) == ("A", D("0.3600"), D("136.00"))
    assert t1.exchange_ts_ms == 1781159489957
    assert t3.yes_price == D("0.5") and t3.exchange_ts_ms is None and len(t3.notes) == 2
    assert len(page.skipped) == 1 and "trades[1]" in page.skipped[0]

"""Order book and trade frames decoded into typed records with exact decimals: the shapes Kalshi
sends today (dollar strings and `_fp` counts), the legacy integer shapes, and odd values."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kalshi_pipeline.kalshi.errors import FrameDecodeError
from kalshi_pipeline.kalshi.messages import BookDelta, BookSnapshot, Trade, decode_frame

D = Decimal
SNAPSHOT = (
    b'{"type":"orderbook_snapshot","sid":1,"seq":1,"sending_ts_ms":1781159489960,"msg":'
    b'{"market_ticker":"KXWTA-26JUN11-LEP","market_id":"f5ed38e2",'
    b'"yes_dollars_fp":[["0.4600","10.00"],["0.4700","3.00"]],"no_dollars_fp":[["0.4800","2.00"]]}}'
)
DELTA = (
    b'{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"market_ticker":"KXWTA-26JUN11-LEP",'
    b'"market_id":"f5ed38e2","price_dollars":"0.4700","delta_fp":"-3.00","side":"yes",'
    b'"ts":"2026-06-11T06:31:29.957081Z","ts_ms":1781159489957}}'
)
TRADE = (
    b'{"type":"trade","sid":11,"seq":2,"msg":{"trade_id":"d91bc706","market_ticker":"HIGHNY-B53.5",'
    b'"yes_price_dollars":"0.3600","no_price_dollars":"0.6400","count_fp":"136.00",'
    b'"taker_side":"no","taker_outcome_side":"no","taker_book_side":"ask",'
    b'"is_block_trade":false,"ts":1669149841,"ts_ms":1669149841000}}'
)


def test_a_snapshot_keeps_every_level_of_both_sides_exactly() -> None:
    snap = decode_frame(SNAPSHOT)
    assert isinstance(snap, BookSnapshot)
    assert snap.yes == ((D("0.46"), D("10")), (D("0.47"), D("3")))
    assert snap.no == ((D("0.48"), D("2")),)
    assert (snap.sid, snap.seq, snap.sent_ts_ms) == (1, 1, 1781159489960)


def test_an_empty_snapshot_is_an_empty_book() -> None:
    frame = (
        b'{"type":"orderbook_snapshot","sid":3,"seq":9,"msg":{"market_ticker":"KX-1",'
        b'"market_id":""}}'
    )
    snap = decode_frame(frame)
    assert isinstance(snap, BookSnapshot)
    assert (snap.yes, snap.no, snap.market_id) == ((), (), None)


def test_a_delta_is_signed_and_keeps_its_times_and_seq() -> None:
    delta = decode_frame(DELTA)
    assert isinstance(delta, BookDelta)
    assert (delta.side, delta.price, delta.delta) == ("yes", D("0.47"), D("-3"))
    assert (delta.exchange_ts_ms, delta.sid, delta.seq, delta.notes) == (1781159489957, 1, 2, ())


def test_a_trade_keeps_both_prices_the_count_and_the_taker() -> None:
    trade = decode_frame(TRADE)
    assert isinstance(trade, Trade)
    assert (trade.trade_id, trade.yes_price, trade.no_price, trade.count) == (
        "d91bc706",
        D("0.36"),
        D("0.64"),
        D("136"),
    )
    assert (trade.taker_outcome_side, trade.taker_book_side, trade.is_block_trade) == (
        "no",
        "ask",
        False,
    )
    assert (trade.exchange_ts_ms, trade.seq) == (1669149841000, 2)


def test_the_legacy_integer_shapes_decode_to_the_same_records() -> None:
    snap = decode_frame(
        b'{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"KX-1",'
        b'"yes":[[46,10],[47,3]],"no":[[48,2]]}}'
    )
    assert isinstance(snap, BookSnapshot) and snap.yes == ((D("0.46"), D(10)), (D("0.47"), D(3)))
    delta = decode_frame(
        b'{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"market_ticker":"KX-1","price":47,'
        b'"delta":-3,"side":"no"}}'
    )
    assert isinstance(delta, BookDelta) and (delta.price, delta.delta) == (D("0.47"), D(-3))


def test_odd_values_are_kept_as_far_as_they_can_be_and_noted() -> None:
    delta = decode_frame(DELTA.replace(b'"-3.00"', b'"-3.005"'))
    assert isinstance(delta, BookDelta) and delta.delta == D("-3.00") and delta.notes
    trade = decode_frame(TRADE.replace(b'"taker_book_side":"ask"', b'"taker_book_side":"mid"'))
    assert isinstance(trade, Trade) and trade.taker_book_side == "mid" and trade.notes


@pytest.mark.parametrize(
    "frame",
    [
        DELTA.replace(b'"side":"yes"', b'"side":"maybe"'),
        TRADE.replace(b'"trade_id":"d91bc706"', b'"trade_id":""'),
        SNAPSHOT.replace(b'"market_ticker":"KXWTA-26JUN11-LEP"', b'"market_ticker":""'),
    ],
)
def test_a_frame_that_names_no_market_side_or_trade_is_refused(frame: bytes) -> None:
    with pytest.raises(FrameDecodeError):
        decode_frame(frame)

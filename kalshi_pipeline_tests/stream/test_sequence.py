"""The sequencer on frames as Kalshi sends them: what it finds for each kind of bad input, and
the books it keeps. (Sequences the simulator cannot produce on purpose, such as a negative
size or a delta without a snapshot, are pinned here; the engine tests in test_books_live.py
cover the rest over a real socket.)"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from kalshi_pipeline.stream.sequence import (
    AFTER_GAP,
    IN_ORDER,
    LATE,
    BookInvalid,
    BookResynced,
    SequenceGap,
    Sequencer,
)

D = Decimal


def frame(kind: str, sid: int, seq: int, **msg: Any) -> bytes:
    return json.dumps({"type": kind, "sid": sid, "seq": seq, "msg": msg}).encode() + b"\n"


def snapshot(sid: int, seq: int, ticker: str, yes: list[list[str]], no: list[list[str]]) -> bytes:
    return frame(
        "orderbook_snapshot",
        sid,
        seq,
        market_ticker=ticker,
        market_id="",
        yes_dollars_fp=yes,
        no_dollars_fp=no,
    )


def delta(sid: int, seq: int, ticker: str, side: str, price: str, change: str) -> bytes:
    return frame(
        "orderbook_delta",
        sid,
        seq,
        market_ticker=ticker,
        side=side,
        price_dollars=price,
        delta_fp=change,
        ts_ms=1_790_000_000_000 + seq,
    )


def trade(sid: int, seq: int, ts_ms: int) -> bytes:
    return frame("trade", sid, seq, trade_id=f"t{seq}", market_ticker="KXA", ts_ms=ts_ms)


def books_of_two() -> Sequencer:
    s = Sequencer()
    s.subscribed(1, "orderbook_delta")
    s.snapshot(snapshot(1, 1, "KXA", [["0.4500", "10.00"]], [["0.5000", "3.00"]]))
    s.snapshot(snapshot(1, 2, "KXB", [], [["0.2000", "1.00"]]))
    return s


def test_deltas_in_order_keep_the_book() -> None:
    s = books_of_two()
    s.delta(delta(1, 3, "KXA", "yes", "0.4500", "-4.00"))
    s.delta(delta(1, 4, "KXA", "yes", "0.4600", "2.00"))
    s.delta(delta(1, 5, "KXA", "no", "0.5000", "-3.00"))
    assert s.found == []
    assert s.books["KXA"].levels() == {("yes", D("0.45")): D(6), ("yes", D("0.46")): D(2)}
    assert s.books["KXB"].levels() == {("no", D("0.2")): D(1)}


def test_an_ok_takes_a_number_like_a_frame() -> None:
    s = books_of_two()
    assert s.number(1, 3) == IN_ORDER  # the `ok` of an add_markets
    s.delta(delta(1, 4, "KXA", "yes", "0.4500", "1.00"))
    assert s.found == []


def test_a_jump_invalidates_every_market_of_the_sid_until_each_has_a_fresh_snapshot() -> None:
    s = books_of_two()
    s.delta(delta(1, 5, "KXA", "yes", "0.4500", "1.00"))  # 3 and 4 lost
    assert s.found == [SequenceGap("orderbook_delta", 1, 3, 5, "gap", ("KXA", "KXB"))]
    assert s.found[0].detail("KXA,KXB") == (
        "orderbook_delta sid 1: seq 3 expected, 5 received; markets: KXA,KXB"
    )
    assert not s.books["KXA"].valid and not s.books["KXB"].valid
    assert s.books["KXA"].levels() == {("yes", D("0.45")): D(10), ("no", D("0.5")): D(3)}
    s.found.clear()
    s.snapshot(snapshot(1, 6, "KXA", [["0.4500", "11.00"]], []))
    assert s.found == [] and s.books["KXA"].valid and not s.books["KXB"].valid
    s.delta(delta(1, 7, "KXB", "no", "0.2000", "5.00"))  # KXB still waits: not applied
    s.snapshot(snapshot(1, 8, "KXB", [], [["0.2000", "6.00"]]))
    assert s.found == [BookResynced("orderbook_delta", 1, ("KXA", "KXB"))]
    assert s.books["KXB"].levels() == {("no", D("0.2")): D(6)}


def test_a_reordered_pair_is_one_gap_and_the_late_frame_is_not_applied() -> None:
    s = books_of_two()
    s.delta(delta(1, 4, "KXA", "yes", "0.4500", "1.00"))
    assert len(s.found) == 1 and s.found[0].kind == "gap"
    assert s.number(1, 3) == LATE  # the held-back frame: no second event
    assert len(s.found) == 1
    s.delta(delta(1, 5, "KXA", "yes", "0.4500", "1.00"))
    assert len(s.found) == 1


def test_a_duplicate_and_a_backward_seq_are_recorded_as_such() -> None:
    s = books_of_two()
    s.delta(delta(1, 3, "KXA", "yes", "0.4500", "1.00"))
    s.delta(delta(1, 3, "KXA", "yes", "0.4500", "1.00"))
    s.delta(delta(1, 1, "KXA", "yes", "0.4500", "1.00"))
    kinds = [(g.kind, g.expected, g.received) for g in s.found if isinstance(g, SequenceGap)]
    assert kinds == [("duplicate", 4, 3), ("backward", 4, 1)]
    assert s.found[0].detail("KXA,KXB") == (
        "orderbook_delta sid 1: seq 4 expected, 3 received (duplicate); markets: KXA,KXB"
    )
    assert s.books["KXA"].levels()[("yes", D("0.45"))] == D(11)  # the duplicate not applied


def test_a_delta_without_a_snapshot_and_a_negative_size_make_the_book_invalid() -> None:
    s = books_of_two()
    s.delta(delta(1, 3, "KXC", "yes", "0.1000", "1.00"))
    s.delta(delta(1, 4, "KXA", "no", "0.5000", "-5.00"))
    assert s.found == [
        BookInvalid("KXC", 1, "delta received before any snapshot"),
        BookInvalid("KXA", 1, "a delta of -5.00 at no 0.5000 would leave -2.00 resting (seq 4)"),
    ]
    assert not s.books["KXA"].valid and s.books["KXB"].valid
    assert s.pending[1] == {"KXA", "KXC"}
    s.found.clear()
    s.snapshot(snapshot(1, 5, "KXC", [["0.1000", "1.00"]], []))
    s.snapshot(snapshot(1, 6, "KXA", [], []))
    assert s.found == [BookResynced("orderbook_delta", 1, ("KXC", "KXA"))]


def test_a_late_snapshot_does_not_count_as_fresh() -> None:
    s = books_of_two()
    s.delta(delta(1, 4, "KXA", "yes", "0.4500", "1.00"))  # 3 lost, or late
    assert s.found[0].kind == "gap"
    s.snapshot(snapshot(1, 3, "KXB", [], []))  # seq 3 arrives late: older than 4
    assert not s.books["KXB"].valid and "KXB" in s.pending[1]


def test_a_removed_market_leaves_no_waiting_and_its_late_deltas_pass() -> None:
    s = books_of_two()
    s.delta(delta(1, 5, "KXA", "yes", "0.4500", "1.00"))
    s.found.clear()
    s.snapshot(snapshot(1, 6, "KXA", [], []))
    s.removed(["KXB"])  # settled while it waited
    assert s.found == [BookResynced("orderbook_delta", 1, ("KXA",))]
    s.found.clear()
    s.delta(delta(1, 7, "KXB", "no", "0.2000", "1.00"))
    assert s.found == [] and "KXB" not in s.books


def test_a_trade_gap_carries_the_window_of_the_lost_trades() -> None:
    s = Sequencer()
    s.reset(now_ms=1_000)
    s.subscribed(7, "trade")
    assert s.trade(trade(7, 1, 5_000)) is None
    assert s.trade(trade(7, 2, 6_000)) is None
    gap = s.trade(trade(7, 4, 9_000))
    assert gap == SequenceGap("trade", 7, 3, 4, "gap", None, 6_000, 9_000)
    assert s.found == [gap]
    assert gap.detail("all") == "trade sid 7: seq 3 expected, 4 received; markets: all"


def test_a_trade_gap_before_any_trade_starts_at_the_subscription() -> None:
    s = Sequencer()
    s.reset(now_ms=1_000)
    s.subscribed(2, "trade")
    gap = s.trade(trade(2, 3, 4_000))
    assert gap is not None and (gap.since_ms, gap.until_ms) == (1_000, 4_000)


def test_frames_of_other_sids_and_unreadable_frames_are_left_alone() -> None:
    s = books_of_two()
    assert s.number(9, 50) == IN_ORDER  # the lifecycle channel's, say
    s.delta(b'{"type":"orderbook_delta","sid":1,"seq":')
    s.delta(delta(1, 3, "KXA", "yes", "0.4500", "1.00"))
    assert s.found == []
    assert s.number(1, 10) == AFTER_GAP


@pytest.mark.parametrize(
    ("side", "price", "change"),
    [
        ("yes", "0.4500", "NaN"),
        ("yes", "0.4500", "sNaN"),
        ("yes", "0.4500", "Infinity"),
        ("yes", "0.4500", "-Infinity"),
        ("yes", "NaN", "1.00"),
        ("yes", "Infinity", "1.00"),
        ("yes", "0.4500", "1.0e"),
        ("yes", "half", "1.00"),
        ("maybe", "0.4500", "1.00"),
    ],
)
def test_a_delta_the_book_cannot_apply_makes_it_invalid_until_a_fresh_snapshot(
    side: str, price: str, change: str
) -> None:
    s = books_of_two()
    s.delta(delta(1, 3, "KXA", side, price, change))
    assert s.found == [
        BookInvalid(
            "KXA",
            1,
            f"a delta the book cannot apply: side {side!r}, price {price!r}, size {change!r} "
            "(seq 3)",
        )
    ]
    assert not s.books["KXA"].valid and s.books["KXB"].valid
    s.delta(delta(1, 4, "KXB", "no", "0.2000", "2.00"))  # the others go on; numbering too
    assert s.books["KXB"].levels() == {("no", D("0.2")): D(3)}
    s.snapshot(snapshot(1, 5, "KXA", [["0.4500", "7.00"]], []))
    assert s.found[1:] == [BookResynced("orderbook_delta", 1, ("KXA",))]
    s.delta(delta(1, 6, "KXA", "yes", "0.4500", "-4.00"))
    assert s.books["KXA"].valid and s.books["KXA"].levels() == {("yes", D("0.45")): D(3)}


def test_a_delta_without_a_side_breaks_its_own_book_and_not_the_numbering() -> None:
    s = books_of_two()
    s.delta(frame("orderbook_delta", 1, 3, market_ticker="KXA", price_dollars="0.45", delta_fp="1"))
    s.delta(delta(1, 4, "KXB", "no", "0.2000", "2.00"))
    assert s.found == [
        BookInvalid(
            "KXA", 1, "a delta the book cannot apply: side None, price '0.45', size '1' (seq 3)"
        )
    ]
    assert s.books["KXB"].valid and s.books["KXB"].levels() == {("no", D("0.2")): D(3)}


def test_a_subscription_the_exchange_ended_is_a_gap_until_its_markets_are_snapshotted_again() -> (
    None
):
    """Error 25 (the exchange dropped frames of a slow reader and ended the subscription): every
    frame from the next seq on is lost to its books; its markets' fresh snapshots on the new
    subscription (another sid) end it, with a `BookResynced` naming the old sid."""
    s = books_of_two()
    s.delta(delta(1, 3, "KXA", "yes", "0.4500", "1.00"))
    assert s.ended(1, 25) == ["KXA", "KXB"]
    assert s.found == [
        SequenceGap("orderbook_delta", 1, 4, None, "buffer overflow", ("KXA", "KXB"))
    ]
    gap = s.found[0]
    assert isinstance(gap, SequenceGap) and gap.ended
    assert gap.detail("KXA,KXB") == (
        "orderbook_delta sid 1: seq 4 expected, none received (buffer overflow); markets: KXA,KXB"
    )
    assert s.sid_markets == {} and s.books == {} and 1 not in s.sids
    s.found.clear()
    s.number(1, 5)  # a straggler of the ended sid: not ours any more, nothing found
    s.subscribed(2, "orderbook_delta")
    s.added(2, ["KXA", "KXB"])
    s.snapshot(snapshot(2, 1, "KXA", [["0.4500", "11.00"]], []))
    assert s.found == []
    s.snapshot(snapshot(2, 2, "KXB", [], []))
    assert s.found == [BookResynced("orderbook_delta", 1, ("KXA", "KXB"))]
    assert s.carried == {} and s.books["KXA"].valid and s.books["KXA"].sid == 2


def test_an_ended_subscription_with_a_seq_and_a_removed_market() -> None:
    """The error frame's own seq is kept; a market removed meanwhile gets no snapshot and is not
    waited for; a channel error (10) says so; a sid with no market is mended at once."""
    s = books_of_two()
    s.ended(1, 10, seq=7)
    assert s.found[0].detail("KXA,KXB") == (  # type: ignore[union-attr]
        "orderbook_delta sid 1: seq 3 expected, 7 received (channel error); markets: KXA,KXB"
    )
    s.found.clear()
    s.removed(["KXB"])
    assert s.found == []
    s.subscribed(2, "orderbook_delta")
    s.snapshot(snapshot(2, 1, "KXA", [], []))
    assert s.found == [BookResynced("orderbook_delta", 1, ("KXA", "KXB"))]
    s.found.clear()
    s.subscribed(3, "orderbook_delta")
    assert s.ended(3, 25) == []
    assert s.found == [
        SequenceGap("orderbook_delta", 3, 1, None, "buffer overflow", ()),
        BookResynced("orderbook_delta", 3, ()),
    ]


def test_a_trade_subscription_the_exchange_ended_is_a_gap_from_its_last_trade() -> None:
    s = Sequencer()
    s.reset(now_ms=1_000)
    s.subscribed(4, "trade")
    assert s.trade_ended(4, 25) is not None  # before any trade: from the subscription's start
    assert s.found == [SequenceGap("trade", 4, 1, None, "buffer overflow", None, 1_000, None)]
    s.found.clear()
    s.subscribed(5, "trade")
    s.trade(trade(5, 1, 2_000))
    gap = s.trade_ended(5, 25, seq=3)
    assert gap == SequenceGap("trade", 5, 2, 3, "buffer overflow", None, 2_000, None)
    assert gap.ended and 5 not in s.sids
    assert (
        gap.detail("all")
        == "trade sid 5: seq 2 expected, 3 received (buffer overflow); markets: all"
    )
    s.found.clear()
    assert s.trade_ended(5, 25) is None and s.found == []  # not ours any more
    s.subscribed(6, "orderbook_delta")
    assert s.trade_ended(6, 25) is None and 6 in s.sids  # a book sid: `ended`

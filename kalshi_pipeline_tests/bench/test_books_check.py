"""The books check (`kalshi-pipeline bench --scenarios books_check`) at a small scale: the
recorder streams real order books and trades while the simulator drops frames, and the
warehouse must match the simulator's book ledger: books equal at random moments outside the
recorded gaps, every dropped frame recorded as a gap, every trade once, a replay identical.
The full run (500 markets, 10 minutes) is the same code; its figures go to the README."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from kalshi_pipeline.bench import bookcheck
from kalshi_pipeline.bench.context import Context
from kalshi_pipeline.bench.display import Display
from kalshi_pipeline.bench.plan import QUICK


@pytest.mark.timeout(480)
def test_the_record_matches_the_exchange_outside_recorded_gaps(tmp_path: Path) -> None:
    plan = replace(
        QUICK,
        books_check_markets=60,
        books_check_rate=40.0,
        books_check_s=40.0,
        books_check_drop_every_s=5.0,
        books_check_times=20,
    )
    ctx = Context(plan=plan, work=tmp_path, display=Display(Console(file=io.StringIO())))
    out = bookcheck.run(ctx)
    f, details = out["figures"], out["details"]
    assert f["books_check_gaps_injected"] >= 4, details
    assert f["books_check_gaps_unrecorded"] == 0, details["unrecorded_gaps"]
    assert f["books_check_moments"] == 20
    assert f["books_check_equal"] == 20, details["moments"]
    assert f["books_check_trades"] > 0
    assert (f["books_check_trades_missing"], f["books_check_trades_extra"]) == (0, 0)
    assert f["books_check_replay_differences"] == 0, details["replay_differences"]


def _ledger(tmp_path: Path, lines: list[dict[str, object]]) -> bookcheck.Ledger:
    path = tmp_path / "books.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return bookcheck.Ledger.read(path)


def test_the_ledger_book_and_gap_matching_the_check_relies_on(tmp_path: Path) -> None:
    """The checker's own truth: a snapshot then deltas rebuild a book (a level emptied goes,
    a socket's copy of a snapshot is not a change), and a gap row names exactly its seqs."""
    snap = {"market_ticker": "M", "yes_dollars_fp": [["0.4500", "10.00"]], "no_dollars_fp": []}
    ledger = _ledger(
        tmp_path,
        [
            {
                "type": "orderbook_snapshot",
                "channel": "orderbook_delta",
                "emitted_at_ms": 1000,
                "msg": snap,
            },
            {
                "type": "orderbook_delta",
                "channel": "orderbook_delta",
                "emitted_at_ms": 2000,
                "msg": {
                    "market_ticker": "M",
                    "side": "no",
                    "price_dollars": "0.5000",
                    "delta_fp": "3.00",
                },
            },
            {
                "type": "orderbook_snapshot",
                "channel": "orderbook_delta",
                "emitted_at_ms": 2500,
                "conn_id": 1,
                "sid": 1,
                "seq": 1,
                "msg": {"market_ticker": "M"},
            },
            {
                "type": "orderbook_delta",
                "channel": "orderbook_delta",
                "emitted_at_ms": 3000,
                "msg": {
                    "market_ticker": "M",
                    "side": "yes",
                    "price_dollars": "0.4500",
                    "delta_fp": "-10.00",
                },
            },
            {
                "type": "dropped",
                "channel": "trade",
                "emitted_at_ms": 3100,
                "conn_id": 1,
                "sid": 2,
                "seq": 7,
                "frame_type": "trade",
            },
        ],
    )
    assert ledger.book_at("M", 1500).levels("yes") == [(bookcheck.Decimal("0.4500"), 10)]
    at_2600 = ledger.book_at("M", 2600)
    assert at_2600.levels("no") == [(bookcheck.Decimal("0.5"), 3)]
    assert at_2600.levels("yes") == [(bookcheck.Decimal("0.45"), 10)]
    assert ledger.book_at("M", 3000).levels("yes") == []
    assert not ledger.quiet("M", 3500) and ledger.quiet("M", 9000)
    assert [d["seq"] for d in ledger.dropped] == [7]
    gap = "trade sid 2: seq 6 expected, 8 received; markets: all"
    # a subscription the exchange ended (error 25): every frame from the expected seq on is lost
    ended = "orderbook_delta sid 4: seq 30 expected, none received (buffer overflow); markets: A,B"
    names = {
        (gap, "trade", 2, 7): True,
        (gap, "trade", 2, 6): True,
        (gap, "trade", 2, 8): False,
        (gap, "trade", 3, 7): False,
        (gap, "orderbook_delta", 2, 7): False,
        ("garbled", "trade", 2, 7): False,
        (ended, "orderbook_delta", 4, 30): True,
        (ended, "orderbook_delta", 4, 31): True,
        (ended, "orderbook_delta", 4, 29): False,
        (ended, "orderbook_delta", 5, 30): False,
        (ended, "trade", 4, 30): False,
    }
    assert {case: bookcheck._names_seq(*case) for case in names} == names

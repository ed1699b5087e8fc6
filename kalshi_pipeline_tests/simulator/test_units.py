"""In-process checks of the simulator's pure parts: book moves, wire formats, parsing."""

from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshi_pipeline.simulator.book import Quote, initial_quote, step
from kalshi_pipeline.simulator.config import parse_duration
from kalshi_pipeline.simulator.faults import FaultError, parse_faults
from kalshi_pipeline.simulator.model import Exchange, encode_ticker
from kalshi_pipeline.simulator.protocol import CommandError, parse_command
from kalshi_pipeline.simulator.rest import decode_cursor, encode_cursor
from kalshi_pipeline.simulator.universe import Builder, HourlySeries
from kalshi_pipeline.simulator.wire import count_fp, rfc3339


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), fair=st.integers(1, 99), traded=st.booleans())
def test_every_step_keeps_the_book_valid_and_its_deltas_replay_it(
    seed: int, fair: int, traded: bool
) -> None:
    rng = random.Random(seed)
    q = initial_quote(rng, fair, traded)
    replayed = q.book.copy()
    for _ in range(300):
        before = q.copy()
        change = step(q, rng)
        for side, price, d in change.deltas:
            levels = replayed.side(side)
            levels[price] = levels.get(price, 0) + d
            assert d != 0 and levels[price] >= 0
            if not levels[price]:
                del levels[price]
        assert replayed == q.book
        assert all(1 <= p <= 99 and s > 0 for p, s in [*q.book.yes.items(), *q.book.no.items()])
        # the L1 is the book's best: YES bid, and the ask from the best NO bid
        best_no = max(q.book.no, default=0)
        assert q.bid == max(q.book.yes, default=0) and q.ask == 100 - best_no
        assert q.bid_size == q.book.yes.get(q.bid, 0) and q.ask_size == q.book.no.get(best_no, 0)
        assert 0 <= q.bid < q.ask <= 100
        traded_now = sum(f.size for f in change.fills)
        assert q.volume == before.volume + traded_now
        assert abs(q.oi - before.oi) <= traded_now and q.oi >= 0
        assert q.l1() != before.l1() or traded_now  # every step is a ticker update
        if change.fills:
            last = change.fills[-1]
            assert q.last == last.price and q.last_size == last.size
            assert len({f.taker_bought_yes for f in change.fills}) == 1


def test_ticker_msg_encoding() -> None:
    q = Quote(bid=0, ask=100, bid_size=0, ask_size=0, last=1, last_size=9, volume=75986, oi=66618)
    us = 1_789_966_800_000_000
    msg = json.loads(encode_ticker("4ac7cb26-aacc-420e-860e-5e7f054d8aa8", "KX-1", q, us))
    assert msg == {
        "market_id": "4ac7cb26-aacc-420e-860e-5e7f054d8aa8",
        "market_ticker": "KX-1",
        "price_dollars": "0.0100",
        "yes_bid_dollars": "0.0000",
        "yes_ask_dollars": "1.0000",
        "volume_fp": "759.86",
        "open_interest_fp": "666.18",
        "dollar_volume": 379,
        "dollar_open_interest": 333,
        "yes_bid_size_fp": "0.00",
        "yes_ask_size_fp": "0.00",
        "last_trade_size_fp": "0.09",
        "ts": 1789966800,
        "ts_ms": 1789966800000,
        "time": "2026-09-21T05:00:00Z",
    }


@pytest.mark.parametrize(
    ("us", "text"),
    [
        (1_784_475_900_544_125, "2026-07-19T15:45:00.544125Z"),
        (1_784_475_900_500_000, "2026-07-19T15:45:00.5Z"),
        (1_784_475_900_000_000, "2026-07-19T15:45:00Z"),
    ],
)
def test_rfc3339_trims_the_fraction_like_go(us: int, text: str) -> None:
    assert rfc3339(us) == text


def test_count_fp() -> None:
    assert [count_fp(v) for v in (0, 5, 100, 12345)] == ["0.00", "0.05", "1.00", "123.45"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("90", 90)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "h", "1h x"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_cursor_round_trip_and_garbage() -> None:
    key = (1_795_496_224_206_419, "KXSIMHOURLY-26NOV24H0600-T56")
    assert decode_cursor(encode_cursor(key)) == key
    for garbage in ("", None, "!!!", "Zm9v", "CgwIuKKp0QYQ"):
        assert decode_cursor(garbage) is None


def test_hourly_tickers_are_unique_and_kalshi_shaped() -> None:
    ex = Exchange()
    hourly = HourlySeries(Builder(ex, random.Random(1)), lifetime_s=20, strikes=3)
    close = hourly.first_close(1_795_496_224_000_000)
    for k in range(200):
        hourly.build(close + k * hourly.lifetime_us, close, "initialized")
    assert len(ex.markets) == 600
    for ticker in ex.markets:
        assert re.fullmatch(r"KXSIMHOURLY-\d\d[A-Z]{3}\d\dH\d{6}-T\d+", ticker), ticker


def test_parse_command_codes() -> None:
    def code(text: str) -> int:
        with pytest.raises(CommandError) as info:
            parse_command(text)
        return info.value.code

    assert code("nope") == 1
    assert code('{"id": true, "cmd": "subscribe"}') == 1
    assert code('{"id": 4, "cmd": "resubscribe"}') == 5
    assert code('{"id": 4}') == 5
    cmd = parse_command('{"id": 4, "cmd": "list_subscriptions"}')
    assert (cmd.id, cmd.cmd, cmd.params) == (4, "list_subscriptions", None)


def test_fault_parsing() -> None:
    assert parse_faults({}).silence_s is None
    req = parse_faults({"silence_s": 3, "malformed_rate": 0.25, "drop_connections": True})
    assert (req.silence_s, req.malformed_rate, req.drop_connections) == (3.0, 0.25, True)
    for bad in ({"nope": 1}, {"silence_s": -1}, {"drop_connections": "yes"}, {"slow_ms": "x"}):
        with pytest.raises(FaultError):
            parse_faults(bad)
    req = parse_faults({"drop_frames": {"channel": "orderbook_delta"}})
    assert req.drop_frames == ("orderbook_delta", 1)
    bad_frames: list[tuple[object, str]] = [
        ({"channel": "ticker"}, "drop_frames.channel must be one of"),
        ({"channel": "trade", "count": 0}, "drop_frames.count must be a whole number"),
        ({"channel": "trade", "count": True}, "drop_frames.count must be a whole number"),
        ({"channel": "trade", "every": 2}, "drop_frames must be an object like"),
        ("orderbook_delta", "drop_frames must be an object like"),
    ]
    for value, message in bad_frames:
        with pytest.raises(FaultError, match=re.escape(message)):
            parse_faults({"drop_frames": value})
    with pytest.raises(FaultError, match=re.escape("reorder_frames.channel")):
        parse_faults({"reorder_frames": {"channel": "fill"}})
    req = parse_faults({"subscription_error": {"channel": "orderbook_delta", "code": 14}})
    assert req.subscription_error == ("orderbook_delta", 14)
    bad_errors: list[tuple[object, str]] = [
        ({"channel": "fill", "code": 14}, "subscription_error.channel must be one of"),
        ({"channel": "trade", "code": 25}, "10 and 25 end the subscription"),
        ({"channel": "trade", "code": True}, "subscription_error.code must be one of"),
        ({"channel": "trade"}, "subscription_error must be an object like"),
    ]
    for value, message in bad_errors:
        with pytest.raises(FaultError, match=re.escape(message)):
            parse_faults({"subscription_error": value})

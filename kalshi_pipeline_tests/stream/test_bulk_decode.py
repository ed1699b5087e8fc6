"""The bulk decoder stores exactly what the per-frame decoder would, and hands it every odd frame.

Frames of every shape (plain, and each kind of odd value the per-frame decoder rounds, flags, reads
from a legacy field or salvages field by field) go through a landing log and the writer into a
real DuckDB file; each stored row is held to `decode_frame`'s object for its frame.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from kalshi_pipeline.kalshi.bulk import delta_columns, ticker_columns
from kalshi_pipeline.kalshi.messages import BookDelta, Tick, decode_frame
from kalshi_pipeline.stream.landing import Kind, LandingLog, Source
from kalshi_pipeline.stream.writer import Writer
from kalshi_pipeline.warehouse.owner import Owner
from kalshi_pipeline_tests.helpers import query

MS = 1_795_000_000_000


def ticker(i: int, **odd: object) -> bytes:
    msg: dict[str, object] = {
        "market_id": f"id-{i}",
        "market_ticker": f"KX-{i % 13}",
        "price_dollars": f"0.{i % 10000:04d}",
        "yes_bid_dollars": "0.1000",
        "yes_ask_dollars": "1.0000" if i % 5 == 0 else "0.2500",
        "volume_fp": f"{i * 7}.00",
        "open_interest_fp": f"{i}.5",
        "yes_bid_size_fp": "12.00",
        "yes_ask_size_fp": "0",
        "last_trade_size_fp": "3.10",
        "dollar_volume": i,
        "ts": (MS + i) // 1000,
        "ts_ms": MS + i,
        "time": "2026-11-15T10:00:00.123456Z",
    }
    envelope: dict[str, object] = {"type": "ticker", "sid": 1, "sending_ts_ms": MS + i + 3}
    for key, value in odd.items():
        target = envelope if key in ("sid", "sending_ts_ms") else msg
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return json.dumps({**envelope, "msg": msg}, separators=(",", ":")).encode()


def delta(i: int, **odd: object) -> bytes:
    sign = "-" if i % 3 == 0 else ""
    msg: dict[str, object] = {
        "market_id": f"id-{i}",
        "market_ticker": f"KX-{i % 11}",
        "price_dollars": f"0.{i % 99 + 1:02d}00",
        "delta_fp": f"{sign}{i % 50 + 1}.00",
        "side": "yes" if i % 2 else "no",
        "ts": "2026-11-15T10:00:00.123456Z",
        "ts_ms": MS + i,
    }
    envelope: dict[str, object] = {
        "type": "orderbook_delta",
        "sid": 2,
        "seq": i + 2,
        "sending_ts_ms": MS + i + 1,
    }
    for key, value in odd.items():
        target = envelope if key in ("sid", "seq", "sending_ts_ms") else msg
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return json.dumps({**envelope, "msg": msg}, separators=(",", ":")).encode()


ODD_TICKS = [
    {"price_dollars": "0.123456"},  # rounded half-even, flagged
    {"price_dollars": "0.330000"},  # more places, none lost: plain
    {"yes_ask_dollars": "1.5"},  # outside 0..1: NULL, flagged
    {"volume_fp": "-4.00"},  # negative count: kept, flagged
    {"volume_fp": "12.005"},  # rounded
    {"volume_fp": "1e3"},  # an exponent
    {"volume_fp": " 5"},  # spaces
    {"open_interest_fp": "1000000000000000"},  # too large for a count
    {"price_dollars": None, "price": 45},  # the legacy integer cents
    {"volume_fp": None, "volume": 9},  # the legacy integer count
    {"ts_ms": None},  # ts and time remain: the exchange time from `ts`
    {"ts_ms": None, "ts": None},  # from `time`
    {"ts_ms": None, "ts": None, "time": None},  # no exchange time
    {"ts_ms": 10**17},  # out of range
    {"sending_ts_ms": -5},
    {"price_dollars": 0.5},  # a number where a string belongs: salvaged field by field
    {"yes_bid_dollars": ""},  # empty: NULL
    {"price_dollars": None},  # absent
    {"market_ticker": ""},  # no ticker: a parse error
    {"extra_key": {"nested": [1, 2]}},  # unknown keys are ignored
    {"price_dollars": "0.5\n0.3"},  # two plain values on two lines are not one plain value
    {"volume_fp": "5\n6.00"},
]
ODD_DELTAS = [
    {"delta_fp": "--5"},
    {"delta_fp": "-"},  # a sign and nothing: NULL
    {"delta_fp": "-0"},
    {"delta_fp": " 7.00"},
    {"delta_fp": "3.333"},
    {"price_dollars": "0.5"},
    {"price_dollars": "2.00"},
    {"price_dollars": None, "price": 40},
    {"delta_fp": None, "delta": -3},
    {"side": "maybe"},
    {"ts_ms": None},
    {"ts_ms": None, "ts": None},
    {"sid": 2**40},
    {"seq": 2**63},  # wider than BIGINT: NULL, flagged
    {"sending_ts_ms": None},
    {"seq": "7"},
    {"delta_fp": "-3\n4"},
]


REJECTED: list[dict[str, object]] = [{"price_dollars": 0.5}, {"seq": "7"}]  # wrong JSON types


def frames() -> list[bytes]:
    rng = random.Random(7)
    out = [ticker(i) for i in range(3000)] + [delta(i) for i in range(3000)]
    out += [ticker(5000 + i, **odd) for i, odd in enumerate(ODD_TICKS) if odd not in REJECTED]
    out += [delta(5000 + i, **odd) for i, odd in enumerate(ODD_DELTAS) if odd not in REJECTED]
    rng.shuffle(out)
    # frames msgspec rejects send their whole batch frame by frame: last, in a batch of their own
    out += [ticker(6000, **REJECTED[0]), delta(6000, **REJECTED[1])]
    out.append(b'{"type":"ticker","sid":1,"msg":{"market_ticker":"KX-1"}}{"type":"ticker"}')
    out.append(b'{"type":"ticker","sid":1,"msg":{"market_ticker":"KX-1"}},{"type":"ticker"}')
    out += [ticker(7000 + i) for i in range(20)] + [delta(7000 + i) for i in range(20)]
    return out


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[Owner]:
    o = Owner(tmp_path / "k.duckdb")
    yield o
    o.close()


def _load(owner: Owner, landing: Path, payloads: list[bytes], batch_rows: int) -> Writer:
    log = LandingLog(landing)
    for i, payload in enumerate(payloads):
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, payload, received_ns=(MS + i) * 10**6 + 7)
    log.close()
    writer = Writer(owner, landing, batch_rows=batch_rows)
    assert writer.drain(60)
    return writer


def test_stored_rows_equal_the_per_frame_decoder_for_every_frame(
    owner: Owner, tmp_path: Path
) -> None:
    payloads = frames()
    # batches of 997 frames: every shuffled odd frame shares its batch with plain ones
    _load(owner, tmp_path / "landing", payloads, batch_rows=997)
    ticks = {}
    deltas = {}
    errors = 0
    for i, payload in enumerate(payloads):
        received_ms = MS + i
        try:
            msg = decode_frame(payload)
        except Exception:
            errors += 1
            continue
        if isinstance(msg, Tick):
            ticks[received_ms] = (
                msg.market_ticker,
                msg.exchange_ts_ms,
                msg.sent_ts_ms,
                msg.price,
                msg.yes_bid,
                msg.yes_ask,
                msg.yes_bid_size,
                msg.yes_ask_size,
                msg.last_trade_size,
                msg.volume,
                msg.open_interest,
            )
        elif isinstance(msg, BookDelta):
            deltas[received_ms] = (
                msg.market_ticker,
                msg.sid if msg.sid is None or msg.sid < 2**31 else None,  # too wide: NULL, flagged
                msg.seq if msg.seq is None or msg.seq < 2**63 else None,
                msg.side,
                msg.price,
                msg.delta,
                None if msg.exchange_ts_ms is None else received_ms - msg.exchange_ts_ms,
                None if msg.sent_ts_ms is None else received_ms - msg.sent_ts_ms,
            )
    stored_ticks = query(
        owner.path,
        "SELECT epoch_ms(received_at), market_ticker, epoch_ms(exchange_ts), epoch_ms(sent_at), "
        "price, yes_bid, yes_ask, yes_bid_size, yes_ask_size, last_trade_size, volume, "
        "open_interest FROM ticks WHERE source = 'websocket'",
    )
    assert {r[0]: tuple(r[1:]) for r in stored_ticks} == ticks
    assert len(stored_ticks) == len(ticks)
    stored_deltas = query(
        owner.path,
        "SELECT epoch_ms(received_at), market_ticker, sid, seq, side, price, delta, "
        "exchange_lag_ms, sent_lag_ms FROM book_deltas_stored",
    )
    assert {r[0]: tuple(r[1:]) for r in stored_deltas} == deltas
    # every odd frame the per-frame decoder flags or rejects is recorded, with where it sits
    flagged = query(
        owner.path,
        "SELECT count(*) FROM feed_events WHERE kind IN ('flagged', 'parse_error') "
        "AND detail LIKE '%[%@%]'",
    )[0][0]
    assert errors >= 3
    assert flagged >= errors + 10


def test_plain_frames_take_the_bulk_path_and_odd_ones_do_not() -> None:
    plain = [ticker(i) for i in range(500)]
    got = ticker_columns(plain)
    assert got.rest == [] and len(got.rows) == 500
    assert got.values["price"][3] == "0.0003" and got.values["volume"][3] == "21.00"
    for odd in ODD_TICKS:
        mixed = [*plain[:10], ticker(99, **odd), *plain[10:20]]
        got = ticker_columns(mixed)
        is_plain = "extra_key" in odd or odd in (
            {"price_dollars": "0.330000"},
            {"yes_bid_dollars": ""},
            {"price_dollars": None},
            {"ts_ms": None, "ts": None, "time": None},
        )
        rejected = odd == {"price_dollars": 0.5}  # a wrong JSON type: the batch goes frame by frame
        assert got.rest == ([] if is_plain else list(range(21)) if rejected else [10]), odd
    deltas = [delta(i) for i in range(300)]
    assert delta_columns(deltas).rest == []
    for odd in ODD_DELTAS:
        got = delta_columns([*deltas[:5], delta(99, **odd)])
        plain_delta = odd in (
            {"delta_fp": "-0"},
            {"price_dollars": "0.5"},
            {"sending_ts_ms": None},
            {"ts_ms": None, "ts": None},
        )
        rejected = odd == {"seq": "7"}
        assert got.rest == ([] if plain_delta else list(range(6)) if rejected else [5]), odd


def test_a_malformed_frame_costs_its_batch_the_fast_path_not_its_rows(
    owner: Owner, tmp_path: Path
) -> None:
    payloads = [ticker(i) for i in range(2000)]
    payloads[700] = b'{"type":"ticker","sid":1,"msg":{"market_ticker":"KX-1"'  # cut short
    _load(owner, tmp_path / "landing", payloads, batch_rows=50_000)
    assert query(owner.path, "SELECT count(*) FROM ticks") == [(1999,)]
    assert query(owner.path, "SELECT count(*) FROM feed_events WHERE kind = 'parse_error'") == [
        (1,)
    ]
    assert query(
        owner.path, "SELECT price, volume FROM ticks WHERE epoch_ms(received_at) = ?", [MS + 1999]
    ) == [(Decimal("0.1999"), Decimal("13993.00"))]

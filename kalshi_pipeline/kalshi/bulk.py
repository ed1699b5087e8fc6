"""Bulk decoding of the frames a firehose is made of: `ticker` and `orderbook_delta`.

The writer used to decode every frame into a `Tick` or `BookDelta`, with a `Decimal` per value:
that was most of its time per frame (read by py-spy on the throughput scenario). Here the frames
of one type in a batch are decoded by one msgspec call, into the same wire structs and with the
same type checks as `messages.decode_frame`, and come out as columns: decimal strings exactly as
received, which the warehouse casts to DECIMAL in its INSERT (`warehouse/loads.py`).

Only plain frames go this way: every decimal a plain digit string that the per-frame decoder
takes as it is (no rounding that changes it, no range to flag, no legacy integer field), the
times in range, the ticker and side present. Any other frame (and every frame of a batch that
msgspec rejects as a whole) comes back in `rest`, for the per-frame decoder, which stores what it
can and notes what was odd. Both paths store the same rows for a plain frame (tested).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from kalshi_pipeline.kalshi.messages import (
    BOOK_SIDES,
    MAX_TS_MS,
    MIN_TS_MS,
    _DeltaFrame,
    _TickerFrame,
)

_TICKER_FRAMES = msgspec.json.Decoder(list[_TickerFrame])
_DELTA_FRAMES = msgspec.json.Decoder(list[_DeltaFrame])
# Plain decimals: what the per-frame decoder stores unchanged and DuckDB's cast reads the same.
# A price: 0 to 1 with up to 4 places (zeros may follow); a count: below 10**15 (MAX_COUNT),
# up to 2 places. Anything else (a sign, an exponent, spaces, more places) is not plain.
# The column patterns match each line atomically and never go back over a line (`(?>...)`, `*+`):
# a value that fails costs one look, not a search through every way to split the lines before it.
_PRICES = re.compile(r"(?:(?>0(?:\.\d{1,4}0*)?|1(?:\.0+)?)\n)*+")
_COUNTS = re.compile(r"(?:(?>\d{1,15}(?:\.\d{1,2}0*)?)\n)*+")
_PRICE = re.compile(r"0(?:\.\d{1,4}0*)?|1(?:\.0+)?")
_COUNT = re.compile(r"\d{1,15}(?:\.\d{1,2}0*)?")


def _bad_rows(columns: list[list[str | None]], price: bool, bad: set[int]) -> None:
    """Add to `bad` the rows of `columns` with a value that is not plain (None and "" are):
    one regular-expression match over each column's values, row by row only when it fails."""
    whole, one = (_PRICES, _PRICE) if price else (_COUNTS, _COUNT)
    for column in columns:
        present = list(filter(None, column))
        if whole.fullmatch("\n".join(present) + "\n" if present else ""):
            continue
        bad.update(i for i, v in enumerate(column) if v and not one.fullmatch(v))


def _bad_signed_rows(column: list[str | None], bad: set[int]) -> None:
    present = [v.removeprefix("-") for v in column if v]
    if _COUNTS.fullmatch("\n".join(present) + "\n" if present else ""):
        return
    bad.update(i for i, v in enumerate(column) if v and not _COUNT.fullmatch(v.removeprefix("-")))


def _bad_ms(column: list[int | None], bad: set[int]) -> None:
    """Add to `bad` the rows whose time (ms; None is fine) a TIMESTAMPTZ cannot hold."""
    bad.update(i for i, v in enumerate(column) if v is not None and not MIN_TS_MS <= v < MAX_TS_MS)


@dataclass
class Columns:
    """The plain frames of a bulk decode, as columns (`rows` are their indexes in the input);
    `rest`: indexes of the frames for the per-frame decoder."""

    values: dict[str, list[object]] = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)
    rest: list[int] = field(default_factory=list)


def _decode_list(
    decoder: msgspec.json.Decoder[Any], payloads: list[bytes]
) -> tuple[list[Any], list[Any]]:
    """The frames and their `msg`s; both empty when msgspec rejects the batch as a whole."""
    try:
        frames = decoder.decode(b"[" + b",".join(payloads) + b"]")
    except (msgspec.DecodeError, RecursionError):
        return [], []
    # a payload holding two objects separated by a comma would shift every frame after it
    if len(frames) != len(payloads):
        return [], []
    return frames, [f.msg for f in frames]


def _finish(values: dict[str, list[object]], n: int, bad: set[int]) -> Columns:
    if not bad:
        return Columns(values, list(range(n)), [])
    keep = [i for i in range(n) if i not in bad]
    return Columns({k: [v[i] for i in keep] for k, v in values.items()}, keep, sorted(bad))


def ticker_columns(payloads: list[bytes]) -> Columns:
    """`ticker` frames as the columns of `ticks` they fill (prices and counts as strings)."""
    frames, msgs = _decode_list(_TICKER_FRAMES, payloads)
    if not frames:
        return Columns(rest=list(range(len(payloads))))
    bad: set[int] = {
        i
        for i, m in enumerate(msgs)
        if not m.market_ticker
        or m.price is not None
        or m.yes_bid is not None
        or m.yes_ask is not None
        or m.volume is not None
        or m.open_interest is not None
        or (m.ts_ms is None and (m.ts is not None or m.time))
    }
    values: dict[str, list[object]] = {
        "market_ticker": [m.market_ticker for m in msgs],
        "exchange_ts": [m.ts_ms for m in msgs],
        "sent_at": [f.sending_ts_ms for f in frames],
        "price": [m.price_dollars for m in msgs],
        "yes_bid": [m.yes_bid_dollars for m in msgs],
        "yes_ask": [m.yes_ask_dollars for m in msgs],
        "yes_bid_size": [m.yes_bid_size_fp for m in msgs],
        "yes_ask_size": [m.yes_ask_size_fp for m in msgs],
        "last_trade_size": [m.last_trade_size_fp for m in msgs],
        "volume": [m.volume_fp for m in msgs],
        "open_interest": [m.open_interest_fp for m in msgs],
    }
    _bad_rows([values[n] for n in ("price", "yes_bid", "yes_ask")], True, bad)  # type: ignore[misc]
    counts = ("yes_bid_size", "yes_ask_size", "last_trade_size", "volume", "open_interest")
    _bad_rows([values[n] for n in counts], False, bad)  # type: ignore[misc]
    _bad_ms(values["exchange_ts"], bad)  # type: ignore[arg-type]
    _bad_ms(values["sent_at"], bad)  # type: ignore[arg-type]
    return _finish(values, len(frames), bad)


def delta_columns(payloads: list[bytes]) -> Columns:
    """`orderbook_delta` frames as the columns of `book_deltas_stored` they fill (price and delta
    as strings; Kalshi's times as given, the warehouse takes them from the receive time)."""
    frames, msgs = _decode_list(_DELTA_FRAMES, payloads)
    if not frames:
        return Columns(rest=list(range(len(payloads))))
    bad: set[int] = {
        i
        for i, m in enumerate(msgs)
        if not m.market_ticker
        or m.side not in BOOK_SIDES
        or m.price is not None
        or m.delta is not None
        or (m.ts_ms is None and m.ts)
    }
    values: dict[str, list[object]] = {
        "market_ticker": [m.market_ticker for m in msgs],
        "sid": [f.sid for f in frames],
        "seq": [f.seq for f in frames],
        "side": [m.side for m in msgs],
        "price": [m.price_dollars for m in msgs],
        "delta": [m.delta_fp for m in msgs],
        "ts_ms": [m.ts_ms for m in msgs],
        "sent_ms": [f.sending_ts_ms for f in frames],
    }
    _bad_rows([values["price"]], True, bad)  # type: ignore[list-item]
    _bad_signed_rows(values["delta"], bad)  # type: ignore[arg-type]
    _bad_ms(values["ts_ms"], bad)  # type: ignore[arg-type]
    _bad_ms(values["sent_ms"], bad)  # type: ignore[arg-type]
    _bad_int_rows(values["sid"], 32, bad)  # type: ignore[arg-type]
    _bad_int_rows(values["seq"], 64, bad)  # type: ignore[arg-type]
    return _finish(values, len(frames), bad)


def _bad_int_rows(column: list[int | None], bits: int, bad: set[int]) -> None:
    """The table's sid is an INTEGER, its seq a BIGINT: a wider number is the per-frame
    decoder's to handle (it stores NULL and flags it)."""
    limit = 2 ** (bits - 1)
    bad.update(i for i, v in enumerate(column) if v is not None and not -limit <= v < limit)

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
# up to 2 places (a delta may be negative). Anything else (a sign elsewhere, an exponent, spaces,
# more places, a line break) is not plain. The column patterns match each line atomically and never
# go back over a line (`(?>...)`, `*+`): a value that fails costs one look, not a search through
# every way to split the lines before it.
_PRICE = r"0(?:\.\d{1,4}0*)?|1(?:\.0+)?"
_COUNT = r"\d{1,15}(?:\.\d{1,2}0*)?"
_SIGNED = r"-?" + _COUNT


class _Plain:
    """Which strings are plain values of one kind. A firehose repeats its values (a batch of
    5,000 ticks holds about a hundred distinct prices), so each column is checked as the set
    of its values not seen before: one regular-expression match over them all, value by value
    only when it fails. The values found plain are remembered (a bounded set)."""

    LIMIT = 5_000

    def __init__(self, pattern: str) -> None:
        self.whole = re.compile(f"(?:(?>{pattern})\n)*+")
        self.one = re.compile(pattern)
        self.known: set[str] = set()

    def bad_rows(self, column: list[str | None], bad: set[int]) -> None:
        """Add to `bad` the rows of `column` whose value is not plain (None and "" are)."""
        fresh: set[str | None] = set(column)
        fresh.difference_update(self.known)
        fresh.discard(None)
        fresh.discard("")
        if not fresh:
            return
        text = "\n".join(fresh)  # type: ignore[arg-type]
        # a value holding a line break would pass as two plain lines: then value by value
        if text.count("\n") == len(fresh) - 1 and self.whole.fullmatch(text + "\n"):
            odd: set[str | None] = set()
        else:
            odd = {v for v in fresh if not self.one.fullmatch(v)}  # type: ignore[arg-type]
            bad.update(i for i, v in enumerate(column) if v in odd)
        if len(self.known) > self.LIMIT:
            self.known.clear()
        self.known.update(fresh - odd)  # type: ignore[arg-type]


_PRICES = _Plain(_PRICE)
_COUNTS = _Plain(_COUNT)
_SIGNED_COUNTS = _Plain(_SIGNED)


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
    for name in ("price", "yes_bid", "yes_ask"):
        _PRICES.bad_rows(values[name], bad)  # type: ignore[arg-type]
    for name in ("yes_bid_size", "yes_ask_size", "last_trade_size", "volume", "open_interest"):
        _COUNTS.bad_rows(values[name], bad)  # type: ignore[arg-type]
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
    _PRICES.bad_rows(values["price"], bad)  # type: ignore[arg-type]
    _SIGNED_COUNTS.bad_rows(values["delta"], bad)  # type: ignore[arg-type]
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

"""Kalshi frames and REST bodies decoded into typed records with exact decimals.

Written to Kalshi's API as of OpenAPI 3.34.0 (October 2026). Both the current wire shape
(dollar strings, `*_fp` counts, `ts_ms`) and the legacy one (integer cents and counts, before
2026-03-12) decode to the same records. Every ticker field but `market_ticker` is optional;
unknown keys are ignored everywhere, and the envelope's `sending_ts_ms` is kept.

Real data breaks the spec (negative sizes on determined markets, more decimals than documented,
a number where a string belongs), so decoding is tolerant per object: a value that breaks a rule
is kept as far as it can be (a negative size as received, a too-precise decimal rounded half-even,
an impossible price as None) and the record carries a note saying what was done. A REST page
decodes its envelope first and then each object on its own, so one odd market never costs the
others. Only an object that cannot be read at all (no ticker, not an object) is skipped, and the
page says so. A frame that does not decode raises `FrameDecodeError` carrying the raw bytes; a
well-formed frame of a type we do not model decodes to `UnknownMessage`.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import msgspec

from kalshi_pipeline.kalshi.errors import FrameDecodeError, SubscriptionError, subscription_error

CENT = Decimal("0.01")
ZERO = Decimal(0)
ONE = Decimal(1)
MAX_COUNT = Decimal(10) ** 15
PRICE_PLACES = 4  # what the warehouse keeps of a dollar string (Kalshi may send up to 6)
COUNT_PLACES = 2
_QUANTUM = {COUNT_PLACES: Decimal("0.01"), PRICE_PLACES: Decimal("0.0001")}

# Enum values Kalshi documents (OpenAPI 3.34.0); another value is kept as received, with a note.
MARKET_STATUSES = frozenset(
    {
        "initialized",
        "inactive",
        "active",
        "closed",
        "determined",
        "disputed",
        "amended",
        "finalized",
    }
)
MARKET_TYPES = frozenset({"binary", "scalar"})
MARKET_RESULTS = frozenset({"yes", "no", "scalar", "void", ""})
SETTLEMENT_BOUNDS_TYPES = frozenset({"default", "floor"})

Notes = list[str] | None
"""Where a conversion reports what it had to do: None is strict (an odd value raises
ValueError, the fast path), a list is tolerant (the value is salvaged and a note appended)."""

# --------------------------------------------------------------------------- records


class Tick(msgspec.Struct, frozen=True, gc=False):
    """One market's top of book and counts at one moment (a `ticker` msg, or a REST market)."""

    market_ticker: str
    market_id: str | None = None
    price: Decimal | None = None  # last trade, dollars
    yes_bid: Decimal | None = None
    yes_ask: Decimal | None = None
    yes_bid_size: Decimal | None = None
    yes_ask_size: Decimal | None = None
    last_trade_size: Decimal | None = None
    volume: Decimal | None = None
    open_interest: Decimal | None = None
    dollar_volume: int | None = None
    dollar_open_interest: int | None = None
    exchange_ts_ms: int | None = None
    sid: int | None = None
    sent_ts_ms: int | None = None  # the envelope's sending_ts_ms: when Kalshi sent the frame
    notes: tuple[str, ...] = ()  # what tolerant decoding did to values that broke the spec


class LifecycleMetadata(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str | None = None
    title: str | None = None
    yes_sub_title: str | None = None
    no_sub_title: str | None = None
    rules_primary: str | None = None
    rules_secondary: str | None = None
    can_close_early: bool | None = None
    event_ticker: str | None = None
    expected_expiration_ts: int | None = None
    strike_type: str | None = None
    floor_strike: float | None = None
    cap_strike: float | None = None
    custom_strike: dict[str, Any] | None = None


class MarketLifecycle(msgspec.Struct, frozen=True):
    """A `market_lifecycle_v2` msg: created, activated, deactivated, determined, settled, ...

    `determined` carries `result` and `settlement_value`; `settled` only `settled_ts`."""

    market_ticker: str
    event_type: str
    open_ts: int | None = None
    close_ts: int | None = None
    determination_ts: int | None = None
    settled_ts: int | None = None
    result: str | None = None
    settlement_value: str | int | float | None = None
    is_deactivated: bool | None = None
    exchange_index: int | None = None
    additional_metadata: LifecycleMetadata | None = None
    price_level_structure: str | None = None
    sid: int | None = None
    seq: int | None = None
    sent_ts_ms: int | None = None
    notes: tuple[str, ...] = ()

    def settlement_dollars(self) -> Decimal | None:
        """`settlement_value` as exact dollars, None when absent or not a number."""
        if self.settlement_value is None or self.settlement_value == "":
            return None
        try:
            d = Decimal(str(self.settlement_value))
        except InvalidOperation:
            return None
        return d if d.is_finite() else None


class EventLifecycle(msgspec.Struct, frozen=True):
    """An `event_lifecycle` msg: a new event, with the series it belongs to."""

    event_ticker: str
    series_ticker: str | None = None
    title: str | None = None
    subtitle: str | None = None
    collateral_return_type: str | None = None
    strike_date: int | None = None
    strike_period: str | None = None
    exchange_index: int | None = None
    sid: int | None = None
    seq: int | None = None
    sent_ts_ms: int | None = None
    notes: tuple[str, ...] = ()


class Subscribed(msgspec.Struct, frozen=True):
    cmd_id: int | None
    channel: str
    sid: int


class SubscriptionInfo(msgspec.Struct, frozen=True):
    channel: str
    sid: int


class Ok(msgspec.Struct, frozen=True):
    """`ok`: the full market list after an update, or the list of subscriptions."""

    cmd_id: int | None
    sid: int | None = None
    seq: int | None = None
    market_tickers: list[str] | None = None
    market_ids: list[str] | None = None
    subscriptions: list[SubscriptionInfo] | None = None


class Unsubscribed(msgspec.Struct, frozen=True):
    cmd_id: int | None
    sid: int | None = None
    seq: int | None = None


class ErrorMessage(msgspec.Struct, frozen=True):
    cmd_id: int | None
    code: int
    text: str = ""
    sid: int | None = None
    seq: int | None = None

    def to_exception(self, raw: bytes = b"") -> SubscriptionError:
        return subscription_error(self.code, self.text, cmd_id=self.cmd_id, sid=self.sid, raw=raw)


Level = tuple[Decimal, Decimal]  # (price in dollars, resting count)
BOOK_SIDES = frozenset({"yes", "no"})


class BookSnapshot(msgspec.Struct, frozen=True):
    """An `orderbook_snapshot` msg: every resting bid of one market, both sides.

    `yes` are YES bids; `no` are NO bids, at NO-leg prices unless the subscription asked for
    `use_yes_price` (then on the YES scale: a NO bid at p is a YES offer at 1 - p). Levels are in
    the order Kalshi sent them. An empty side is an empty tuple."""

    market_ticker: str
    market_id: str | None = None
    yes: tuple[Level, ...] = ()
    no: tuple[Level, ...] = ()
    sid: int | None = None
    seq: int | None = None
    sent_ts_ms: int | None = None
    notes: tuple[str, ...] = ()


class BookDelta(msgspec.Struct, frozen=True):
    """An `orderbook_delta` msg: the resting count at one price of one side changed by `delta`
    (signed)."""

    market_ticker: str
    side: str  # 'yes' or 'no'
    price: Decimal | None
    delta: Decimal | None
    market_id: str | None = None
    exchange_ts_ms: int | None = None
    client_order_id: str | None = None
    sid: int | None = None
    seq: int | None = None
    sent_ts_ms: int | None = None
    notes: tuple[str, ...] = ()


class Trade(msgspec.Struct, frozen=True):
    """A `trade` msg (or a `GET /markets/trades` object): one execution."""

    trade_id: str
    market_ticker: str
    yes_price: Decimal | None = None
    no_price: Decimal | None = None
    count: Decimal | None = None
    taker_side: str | None = None  # deprecated by Kalshi in favour of the two below
    taker_outcome_side: str | None = None
    taker_book_side: str | None = None
    is_block_trade: bool | None = None
    exchange_ts_ms: int | None = None
    sid: int | None = None
    seq: int | None = None
    sent_ts_ms: int | None = None
    notes: tuple[str, ...] = ()


class UnknownMessage(msgspec.Struct, frozen=True):
    type: str
    raw: bytes


Message = (
    Tick
    | BookSnapshot
    | BookDelta
    | Trade
    | MarketLifecycle
    | EventLifecycle
    | Subscribed
    | Ok
    | Unsubscribed
    | ErrorMessage
    | UnknownMessage
)

# --------------------------------------------------------------------------- wire shapes
# The firehose's structs (ticker, orderbook_delta) are not tracked by the garbage collector
# (`gc=False`: they hold strings, numbers and each other, never a cycle): the bulk decoder
# (`bulk.py`) makes 100,000 at a time, and tracking them set off collection after collection.


class _TickerMsg(msgspec.Struct, gc=False):
    market_ticker: str
    market_id: str | None = None
    price_dollars: str | None = None
    yes_bid_dollars: str | None = None
    yes_ask_dollars: str | None = None
    volume_fp: str | None = None
    open_interest_fp: str | None = None
    dollar_volume: int | float | None = None
    dollar_open_interest: int | float | None = None
    yes_bid_size_fp: str | None = None
    yes_ask_size_fp: str | None = None
    last_trade_size_fp: str | None = None
    ts: int | None = None
    ts_ms: int | None = None
    time: str | None = None
    # legacy integer shape (cents, whole contracts)
    price: int | None = None
    yes_bid: int | None = None
    yes_ask: int | None = None
    volume: int | None = None
    open_interest: int | None = None


class _SnapshotMsg(msgspec.Struct):
    market_ticker: str
    market_id: str | None = None
    yes_dollars_fp: list[tuple[str, str]] | None = None
    no_dollars_fp: list[tuple[str, str]] | None = None
    # legacy (before 2026-03-12): integer cents and counts, and dollar strings with int counts
    yes: list[tuple[int, int]] | None = None
    no: list[tuple[int, int]] | None = None


class _DeltaMsg(msgspec.Struct, gc=False):
    market_ticker: str
    side: str
    market_id: str | None = None
    price_dollars: str | None = None
    delta_fp: str | None = None
    ts: str | None = None  # RFC3339 with microseconds (deprecated)
    ts_ms: int | None = None
    client_order_id: str | None = None
    # legacy
    price: int | None = None
    delta: int | None = None


class _TradeMsg(msgspec.Struct):
    trade_id: str
    market_ticker: str
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    count_fp: str | None = None
    taker_side: str | None = None
    taker_outcome_side: str | None = None
    taker_book_side: str | None = None
    is_block_trade: bool | None = None
    ts: int | None = None  # seconds
    ts_ms: int | None = None
    # legacy
    yes_price: int | None = None
    no_price: int | None = None
    count: int | None = None


class _DataEnvelope(msgspec.Struct):
    """The envelope keys of a data frame besides `type` and `msg` (others are ignored)."""

    sid: int | None = None
    seq: int | None = None
    sending_ts_ms: int | None = None


class _TickerFrame(msgspec.Struct, tag_field="type", tag="ticker", gc=False):
    msg: _TickerMsg
    sid: int | None = None
    seq: int | None = None
    sending_ts_ms: int | None = None


class _SnapshotFrame(msgspec.Struct, tag_field="type", tag="orderbook_snapshot"):
    msg: _SnapshotMsg
    sid: int | None = None
    seq: int | None = None
    sending_ts_ms: int | None = None


class _DeltaFrame(msgspec.Struct, tag_field="type", tag="orderbook_delta", gc=False):
    msg: _DeltaMsg
    sid: int | None = None
    seq: int | None = None
    sending_ts_ms: int | None = None


class _TradeFrame(msgspec.Struct, tag_field="type", tag="trade"):
    msg: _TradeMsg
    sid: int | None = None
    seq: int | None = None
    sending_ts_ms: int | None = None


class _LifecycleFrame(msgspec.Struct, tag_field="type", tag="market_lifecycle_v2"):
    msg: MarketLifecycle
    sid: int | None = None
    seq: int | None = None
    sending_ts_ms: int | None = None


class _EventLifecycleFrame(msgspec.Struct, tag_field="type", tag="event_lifecycle"):
    msg: EventLifecycle
    sid: int | None = None
    seq: int | None = None
    sending_ts_ms: int | None = None


class _SubscribedMsg(msgspec.Struct):
    channel: str
    sid: int


class _SubscribedFrame(msgspec.Struct, tag_field="type", tag="subscribed"):
    msg: _SubscribedMsg
    id: int | None = None


class _OkMsg(msgspec.Struct):
    market_tickers: list[str] | None = None
    market_ids: list[str] | None = None


class _OkFrame(msgspec.Struct, tag_field="type", tag="ok"):
    id: int | None = None
    sid: int | None = None
    seq: int | None = None
    msg: _OkMsg | list[SubscriptionInfo] | None = None


class _UnsubscribedFrame(msgspec.Struct, tag_field="type", tag="unsubscribed"):
    id: int | None = None
    sid: int | None = None
    seq: int | None = None


class _ErrorMsg(msgspec.Struct):
    code: int
    msg: str = ""


class _ErrorFrame(msgspec.Struct, tag_field="type", tag="error"):
    msg: _ErrorMsg
    id: int | None = None
    sid: int | None = None
    seq: int | None = None


class _Envelope(msgspec.Struct):
    type: str


_FRAME_DECODER = msgspec.json.Decoder(
    _TickerFrame
    | _SnapshotFrame
    | _DeltaFrame
    | _TradeFrame
    | _LifecycleFrame
    | _EventLifecycleFrame
    | _SubscribedFrame
    | _OkFrame
    | _UnsubscribedFrame
    | _ErrorFrame
)
_TICKER_DECODER = msgspec.json.Decoder(_TickerFrame)
_ENVELOPE_DECODER = msgspec.json.Decoder(_Envelope)
KNOWN_TYPES = frozenset(
    {
        "ticker",
        "orderbook_snapshot",
        "orderbook_delta",
        "trade",
        "market_lifecycle_v2",
        "event_lifecycle",
        "subscribed",
        "ok",
        "unsubscribed",
        "error",
    }
)

_DATA_FRAMES: dict[str, tuple[type[Any], type[Any]]] = {
    "ticker": (_TickerFrame, _TickerMsg),
    "orderbook_snapshot": (_SnapshotFrame, _SnapshotMsg),
    "orderbook_delta": (_DeltaFrame, _DeltaMsg),
    "trade": (_TradeFrame, _TradeMsg),
    "market_lifecycle_v2": (_LifecycleFrame, MarketLifecycle),
    "event_lifecycle": (_EventLifecycleFrame, EventLifecycle),
}

# --------------------------------------------------------------------------- conversion


def _odd(notes: Notes, message: str, salvage: Any) -> Any:
    """Strict: raise. Tolerant: note what was done and return the salvaged value."""
    if notes is None:
        raise ValueError(message)
    notes.append(message)
    return salvage


def _decimal(value: str | None, field: str, notes: Notes, *, price: bool = False) -> Decimal | None:
    """An exact decimal from a wire string. Odd values: not a number or an impossible price ->
    None; a negative count -> as received; more places than the warehouse keeps -> rounded
    half-even (the raw frame stays in the landing log)."""
    if value is None or value == "":
        return None
    d, odd = _parse_decimal(value, price)
    for why in odd:  # strict: the first raises; tolerant: each is noted
        _odd(notes, f"{field}={value!r} {why}", None)
    return d


@functools.lru_cache(maxsize=1 << 14)
def _parse_decimal(value: str, price: bool) -> tuple[Decimal | None, tuple[str, ...]]:
    """`_decimal`'s answer for one wire string, and what was odd about it.

    Memoized: a firehose repeats the same few thousand price and size strings (a price has at
    most 10,001 values; 16,384 entries take about 4 MB), and parsing one costs several
    microseconds, most of the writer's time per tick before this cache; Decimals are
    immutable, so sharing one is safe."""
    try:
        d = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        return None, ("is not a decimal; stored as NULL",)
    if not d.is_finite():
        return None, ("is not a finite number; stored as NULL",)
    negative = d < ZERO
    if price:
        if negative or d > ONE:
            return None, ("is outside 0..1 dollars; stored as NULL",)
        places = PRICE_PLACES
    else:
        if d >= MAX_COUNT or (negative and d <= -MAX_COUNT):
            return None, ("is too large for a count; stored as NULL",)
        places = COUNT_PLACES
    odd: tuple[str, ...] = ()
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -places:
        rounded = d.quantize(_QUANTUM[places], rounding=ROUND_HALF_EVEN)
        if rounded != d:
            odd += (
                f"has more than {places} decimal places; stored rounded half-even as {rounded}",
            )
        d = rounded
    if negative:  # a count (a negative price returned above)
        odd += ("is negative; stored as received",)
    return d, odd


def _price(value: str | None, field: str, notes: Notes) -> Decimal | None:
    return _decimal(value, field, notes, price=True)


def _cents(value: int | None, field: str, notes: Notes) -> Decimal | None:
    if value is None:
        return None
    if not 0 <= value <= 100:
        return _odd(notes, f"{field}={value!r} cents is outside 0..100; stored as NULL", None)
    return Decimal(value) * CENT


def _count(value: int | None, field: str, notes: Notes) -> Decimal | None:
    if value is None:
        return None
    if abs(value) >= MAX_COUNT:
        return _odd(notes, f"{field}={value!r} is too large for a count; stored as NULL", None)
    d = Decimal(value)
    if d < ZERO:
        d = _odd(notes, f"{field}={value!r} is negative; stored as received", d)
    return d


def _whole(value: int | float | None) -> int | None:
    return None if value is None else int(value)


def _enum(value: str | None, field: str, allowed: frozenset[str], notes: Notes) -> str | None:
    if value is None or value in allowed:
        return value
    return _odd(
        notes, f"{field}={value!r} is not a value Kalshi documents; stored as received", value
    )


_RFC3339 = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,12}))?(Z|[+-]\d\d:\d\d)$", re.IGNORECASE
)


def parse_rfc3339_ms(value: str) -> int:
    """Milliseconds since the epoch of an RFC3339 time with up to nanosecond precision."""
    m = _RFC3339.match(value.strip())
    if m is None:
        raise ValueError(f"time={value!r} is not an RFC3339 timestamp")
    head, fraction, zone = m.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    tz = "+00:00" if zone.upper() == "Z" else zone
    dt = datetime.fromisoformat(f"{head}.{micro}{tz}")
    return int(dt.timestamp() * 1000)


MIN_TS_MS = 0
MAX_TS_MS = 253_402_300_800_000  # year 10000: what a TIMESTAMPTZ column can hold


def _ms(value: int | None, field: str, notes: Notes) -> int | None:
    if value is None or MIN_TS_MS <= value < MAX_TS_MS:
        return value
    return _odd(notes, f"{field}={value} ms is outside 1970..9999; stored as NULL", None)


def _exchange_ms(m: _TickerMsg, notes: Notes) -> int | None:
    if m.ts_ms is not None:
        return _ms(m.ts_ms, "ts_ms", notes)
    if m.ts is not None:
        return _ms(m.ts * 1000, "ts", notes)
    if m.time:
        try:
            return _ms(parse_rfc3339_ms(m.time), "time", notes)
        except ValueError as exc:
            return _odd(notes, f"{exc}; stored as NULL", None)
    return None


def _dollars_or_cents(
    dollars: str | None, cents: int | None, name: str, notes: Notes
) -> Decimal | None:
    """The current dollar string if present, else the legacy integer cents."""
    if dollars is not None:
        return _price(dollars, f"{name}_dollars", notes)
    return _cents(cents, name, notes)


def _fp_or_count(fp: str | None, count: int | None, name: str, notes: Notes) -> Decimal | None:
    """The current `*_fp` count string if present, else the legacy integer count."""
    if fp is not None:
        return _decimal(fp, f"{name}_fp", notes)
    return _count(count, name, notes)


def tick_from_wire(
    m: _TickerMsg, sid: int | None = None, sent_ts_ms: int | None = None, notes: Notes = None
) -> Tick:
    """The Tick of a ticker msg; strict when `notes` is None (any odd value raises)."""
    if not m.market_ticker:
        raise ValueError("market_ticker is empty")
    return Tick(
        market_ticker=m.market_ticker,
        market_id=m.market_id or None,
        price=_dollars_or_cents(m.price_dollars, m.price, "price", notes),
        yes_bid=_dollars_or_cents(m.yes_bid_dollars, m.yes_bid, "yes_bid", notes),
        yes_ask=_dollars_or_cents(m.yes_ask_dollars, m.yes_ask, "yes_ask", notes),
        yes_bid_size=_decimal(m.yes_bid_size_fp, "yes_bid_size_fp", notes),
        yes_ask_size=_decimal(m.yes_ask_size_fp, "yes_ask_size_fp", notes),
        last_trade_size=_decimal(m.last_trade_size_fp, "last_trade_size_fp", notes),
        volume=_fp_or_count(m.volume_fp, m.volume, "volume", notes),
        open_interest=_fp_or_count(m.open_interest_fp, m.open_interest, "open_interest", notes),
        dollar_volume=_whole(m.dollar_volume),
        dollar_open_interest=_whole(m.dollar_open_interest),
        exchange_ts_ms=_exchange_ms(m, notes),
        sid=sid,
        sent_ts_ms=sent_ts_ms
        if sent_ts_ms is None or MIN_TS_MS <= sent_ts_ms < MAX_TS_MS
        else _ms(sent_ts_ms, "sending_ts_ms", notes),
        notes=tuple(notes) if notes else (),
    )


def _tick(
    m: _TickerMsg, sid: int | None, sent_ts_ms: int | None, notes: list[str] | None = None
) -> Tick:
    """Strict first (the fast path); if a value breaks a rule, again tolerantly, with notes."""
    if notes is None:
        try:
            return tick_from_wire(m, sid, sent_ts_ms)
        except (ValueError, ArithmeticError):
            notes = []
    return tick_from_wire(m, sid, sent_ts_ms, notes)


_MISSING = object()


def _coerce(value: Any, kind: Any) -> Any:
    """A value of the wrong JSON type read as the expected one where that is unambiguous (a
    number where a decimal string belongs, a digit string where an integer does)."""
    candidates: list[Any] = []
    if isinstance(value, int | float) and not isinstance(value, bool):
        candidates.append(str(value))
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        candidates.append(int(value))
    for candidate in candidates:
        try:
            return msgspec.convert(candidate, kind)
        except msgspec.ValidationError:
            continue
    return _MISSING


def _lenient(obj: Any, cls: type[Any], where: str, notes: list[str]) -> Any:
    """A decoded JSON object as `cls`, field by field: a field of the wrong type is coerced
    when unambiguous, else dropped (noted). Raises ValueError when not an object or a required
    field is unusable."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where} is a JSON {type(obj).__name__}, not an object")
    clean: dict[str, Any] = {}
    for f in msgspec.structs.fields(cls):
        name = f.encode_name
        if name not in obj:
            continue
        value = obj[name]
        try:
            msgspec.convert(value, f.type)
        except msgspec.ValidationError:
            shown = repr(value)[:80]
            if f.required:  # identities (tickers, event types) are never guessed
                raise ValueError(f"{where}.{name}={shown} does not fit its type") from None
            fixed = _coerce(value, f.type)
            if fixed is _MISSING:
                notes.append(f"{where}.{name}={shown} does not fit its documented type; ignored")
                continue
            notes.append(f"{where}.{name}={shown} had the wrong JSON type; read as {fixed!r}")
            value = fixed
        clean[name] = value
    return msgspec.convert(clean, cls)


def _json(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _convert(frame: Any, raw: bytes, notes: list[str] | None = None) -> Message:
    match frame:
        case _TickerFrame(msg=m, sid=sid, sending_ts_ms=sent):
            return _tick(m, sid, sent, notes)
        case _SnapshotFrame(msg=m, sid=sid, seq=seq, sending_ts_ms=sent):
            return _strict_then_tolerant(_snapshot, m, sid, seq, sent, notes)
        case _DeltaFrame(msg=m, sid=sid, seq=seq, sending_ts_ms=sent):
            return _strict_then_tolerant(_delta, m, sid, seq, sent, notes)
        case _TradeFrame(msg=m, sid=sid, seq=seq, sending_ts_ms=sent):
            return _strict_then_tolerant(trade_from_wire, m, sid, seq, sent, notes)
        case (
            _LifecycleFrame(msg=m, sid=sid, seq=seq, sending_ts_ms=sent)
            | _EventLifecycleFrame(msg=m, sid=sid, seq=seq, sending_ts_ms=sent)
        ):
            sent_notes: list[str] = list(notes or ())
            sent = _ms(sent, "sending_ts_ms", sent_notes)
            if isinstance(m, MarketLifecycle):
                _enum(m.result or None, "result", MARKET_RESULTS, sent_notes)
            return msgspec.structs.replace(
                m, sid=sid, seq=seq, sent_ts_ms=sent, notes=tuple(sent_notes)
            )
        case _SubscribedFrame(msg=m, id=cmd_id):
            return Subscribed(cmd_id=cmd_id, channel=m.channel, sid=m.sid)
        case _OkFrame(msg=list() as subs, id=cmd_id, sid=sid, seq=seq):
            return Ok(cmd_id=cmd_id, sid=sid, seq=seq, subscriptions=subs)
        case _OkFrame(msg=m, id=cmd_id, sid=sid, seq=seq):
            return Ok(
                cmd_id=cmd_id,
                sid=sid,
                seq=seq,
                market_tickers=m.market_tickers if m else None,
                market_ids=m.market_ids if m else None,
            )
        case _UnsubscribedFrame(id=cmd_id, sid=sid, seq=seq):
            return Unsubscribed(cmd_id=cmd_id, sid=sid, seq=seq)
        case _ErrorFrame(msg=m, id=cmd_id, sid=sid, seq=seq):
            return ErrorMessage(cmd_id=cmd_id, code=m.code, text=m.msg, sid=sid, seq=seq)
    raise FrameDecodeError("unexpected frame", raw)  # pragma: no cover - union is exhaustive


def _signed(value: str | None, field: str, notes: Notes) -> Decimal | None:
    """A signed count change (an order book delta): negative is normal here."""
    if value is None or value == "":
        return None
    body = value.strip()
    if body.startswith("-"):
        d = _decimal(body[1:], field, notes)
        return None if d is None else -d
    return _decimal(body, field, notes)


def _levels(
    dollars: list[tuple[str, str]] | None,
    legacy: list[tuple[int, int]] | None,
    name: str,
    notes: Notes,
) -> tuple[Level, ...]:
    out: list[Level] = []
    if dollars is not None:
        for price_s, count_s in dollars:
            price = _price(price_s, f"{name}_dollars_fp price", notes)
            count = _decimal(count_s, f"{name}_dollars_fp count", notes)
            if price is not None and count is not None:
                out.append((price, count))
    elif legacy is not None:
        for cents, count_i in legacy:
            price = _cents(cents, f"{name} price", notes)
            count = _count(count_i, f"{name} count", notes)
            if price is not None and count is not None:
                out.append((price, count))
    return tuple(out)


def _snapshot(
    m: _SnapshotMsg, sid: int | None, seq: int | None, sent: int | None, notes: Notes
) -> BookSnapshot:
    if not m.market_ticker:
        raise ValueError("market_ticker is empty")
    return BookSnapshot(
        market_ticker=m.market_ticker,
        market_id=m.market_id or None,
        yes=_levels(m.yes_dollars_fp, m.yes, "yes", notes),
        no=_levels(m.no_dollars_fp, m.no, "no", notes),
        sid=sid,
        seq=seq,
        sent_ts_ms=_ms(sent, "sending_ts_ms", notes),
        notes=tuple(notes) if notes else (),
    )


def _delta(
    m: _DeltaMsg, sid: int | None, seq: int | None, sent: int | None, notes: Notes
) -> BookDelta:
    if not m.market_ticker:
        raise ValueError("market_ticker is empty")
    if m.side not in BOOK_SIDES:
        raise ValueError(f"side={m.side!r} is neither yes nor no")
    if m.ts_ms is not None:
        ts = _ms(m.ts_ms, "ts_ms", notes)
    elif m.ts:
        try:
            ts = _ms(parse_rfc3339_ms(m.ts), "ts", notes)
        except ValueError as exc:
            ts = _odd(notes, f"{exc}; stored as NULL", None)
    else:
        ts = None
    delta = (
        _signed(m.delta_fp, "delta_fp", notes)
        if m.delta_fp is not None
        else (None if m.delta is None else Decimal(m.delta))
    )
    return BookDelta(
        market_ticker=m.market_ticker,
        side=m.side,
        price=_dollars_or_cents(m.price_dollars, m.price, "price", notes),
        delta=delta,
        market_id=m.market_id or None,
        exchange_ts_ms=ts,
        client_order_id=m.client_order_id,
        sid=sid,
        seq=seq,
        sent_ts_ms=_ms(sent, "sending_ts_ms", notes),
        notes=tuple(notes) if notes else (),
    )


TAKER_SIDES = frozenset({"yes", "no"})
TAKER_BOOK_SIDES = frozenset({"bid", "ask"})


def trade_from_wire(
    m: _TradeMsg,
    sid: int | None = None,
    seq: int | None = None,
    sent: int | None = None,
    notes: Notes = None,
) -> Trade:
    if not m.trade_id or not m.market_ticker:
        raise ValueError("trade_id or market_ticker is empty")
    if m.ts_ms is not None:
        ts = _ms(m.ts_ms, "ts_ms", notes)
    elif m.ts is not None:
        ts = _ms(m.ts * 1000, "ts", notes)
    else:
        ts = None
    return Trade(
        trade_id=m.trade_id,
        market_ticker=m.market_ticker,
        yes_price=_dollars_or_cents(m.yes_price_dollars, m.yes_price, "yes_price", notes),
        no_price=_dollars_or_cents(m.no_price_dollars, m.no_price, "no_price", notes),
        count=_fp_or_count(m.count_fp, m.count, "count", notes),
        taker_side=_enum(m.taker_side, "taker_side", TAKER_SIDES, notes),
        taker_outcome_side=_enum(m.taker_outcome_side, "taker_outcome_side", TAKER_SIDES, notes),
        taker_book_side=_enum(m.taker_book_side, "taker_book_side", TAKER_BOOK_SIDES, notes),
        is_block_trade=m.is_block_trade,
        exchange_ts_ms=ts,
        sid=sid,
        seq=seq,
        sent_ts_ms=_ms(sent, "sending_ts_ms", notes),
        notes=tuple(notes) if notes else (),
    )


def _strict_then_tolerant(build: Any, m: Any, sid: Any, seq: Any, sent: Any, notes: Any) -> Any:
    if notes is None:
        try:
            return build(m, sid, seq, sent, None)
        except (ValueError, ArithmeticError):
            notes = []
    return build(m, sid, seq, sent, list(notes))


def _decode_data_frame_leniently(data: bytes, kind: str) -> Message:
    """A data frame whose keys have unexpected JSON types, read field by field (noted)."""
    frame_cls, msg_cls = _DATA_FRAMES[kind]
    obj = _json(data)
    notes: list[str] = []
    msg = _lenient(obj.get("msg"), msg_cls, "msg", notes)
    env = _lenient(
        {k: obj[k] for k in ("sid", "seq", "sending_ts_ms") if k in obj},
        _DataEnvelope,
        "envelope",
        notes,
    )
    frame = frame_cls(msg=msg, sid=env.sid, seq=env.seq, sending_ts_ms=env.sending_ts_ms)
    return _convert(frame, data, notes)


def decode_frame(raw: bytes | str) -> Message:
    """Decode one WebSocket text frame (trailing whitespace is fine)."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    try:
        return _convert(_FRAME_DECODER.decode(data), data)
    except msgspec.DecodeError as exc:
        reason = str(exc)
        if isinstance(exc, msgspec.ValidationError):
            try:
                kind = _ENVELOPE_DECODER.decode(data).type
            except (msgspec.DecodeError, ValueError, RecursionError):
                raise FrameDecodeError(f"no message type: {reason}", data) from None
            if kind not in KNOWN_TYPES:
                return UnknownMessage(type=kind, raw=data)
            if kind in _DATA_FRAMES:
                try:
                    return _decode_data_frame_leniently(data, kind)
                except (msgspec.DecodeError, ValueError, ArithmeticError) as again:
                    reason = f"{reason}; field by field: {again}"
        raise FrameDecodeError(reason, data) from None
    except (ValueError, ArithmeticError, RecursionError) as exc:
        raise FrameDecodeError(f"{type(exc).__name__}: {exc}", data) from None


def decode_tick(raw: bytes) -> Tick:
    """Decode a frame known to be a ticker frame: the engine's fast path."""
    try:
        frame = _TICKER_DECODER.decode(raw)
        try:
            return tick_from_wire(frame.msg, frame.sid, frame.sending_ts_ms)
        except (ValueError, ArithmeticError):  # a value breaks a rule: again, tolerantly
            return tick_from_wire(frame.msg, frame.sid, frame.sending_ts_ms, [])
    except msgspec.ValidationError as exc:
        try:
            kind = _ENVELOPE_DECODER.decode(raw).type
        except (msgspec.DecodeError, ValueError, RecursionError):
            kind = None
        if kind != "ticker":
            raise FrameDecodeError(str(exc), raw) from None
        try:
            tick = _decode_data_frame_leniently(raw, "ticker")
        except (msgspec.DecodeError, ValueError, ArithmeticError) as again:
            raise FrameDecodeError(f"{exc}; field by field: {again}", raw) from None
        assert isinstance(tick, Tick)
        return tick
    except msgspec.DecodeError as exc:
        raise FrameDecodeError(str(exc), raw) from None
    except (ValueError, ArithmeticError, RecursionError) as exc:
        raise FrameDecodeError(f"{type(exc).__name__}: {exc}", raw) from None


# --------------------------------------------------------------------------- REST bodies


class Market(msgspec.Struct, frozen=True):
    """A REST market object, its L1 normalised like a `Tick`."""

    ticker: str
    event_ticker: str | None = None
    status: str | None = None
    title: str | None = None
    yes_sub_title: str | None = None
    market_type: str | None = None
    open_time: datetime | None = None
    close_time: datetime | None = None
    created_time: datetime | None = None
    updated_time: datetime | None = None
    result: str | None = None
    last_price: Decimal | None = None
    yes_bid: Decimal | None = None
    yes_ask: Decimal | None = None
    yes_bid_size: Decimal | None = None
    yes_ask_size: Decimal | None = None
    volume: Decimal | None = None
    open_interest: Decimal | None = None
    settlement_bounds_type: str | None = None  # 'default' | 'floor' (required since 3.31.0)
    settlement_floor: Decimal | None = None  # dollars, on 'floor' markets
    settlement_value: Decimal | None = None  # dollars, once determined
    exchange_index: int | None = None  # the matching-engine shard
    notes: tuple[str, ...] = ()

    def to_tick(self) -> Tick:
        return Tick(
            market_ticker=self.ticker,
            price=self.last_price,
            yes_bid=self.yes_bid,
            yes_ask=self.yes_ask,
            yes_bid_size=self.yes_bid_size,
            yes_ask_size=self.yes_ask_size,
            volume=self.volume,
            open_interest=self.open_interest,
        )


class _MarketWire(msgspec.Struct):
    ticker: str
    event_ticker: str | None = None
    status: str | None = None
    title: str | None = None
    yes_sub_title: str | None = None
    market_type: str | None = None
    open_time: datetime | None = None
    close_time: datetime | None = None
    created_time: datetime | None = None
    updated_time: datetime | None = None
    result: str | None = None
    last_price_dollars: str | None = None
    yes_bid_dollars: str | None = None
    yes_ask_dollars: str | None = None
    yes_bid_size_fp: str | None = None
    yes_ask_size_fp: str | None = None
    volume_fp: str | None = None
    open_interest_fp: str | None = None
    settlement_bounds_type: str | None = None
    settlement_floor_dollars: str | None = None
    settlement_value_dollars: str | None = None
    exchange_index: int | None = None
    # legacy
    last_price: int | None = None
    yes_bid: int | None = None
    yes_ask: int | None = None
    volume: int | None = None
    open_interest: int | None = None


def market_from_wire(w: _MarketWire, notes: Notes = None) -> Market:
    """The Market of a wire object; strict when `notes` is None (any odd value raises)."""
    if not w.ticker:
        raise ValueError("ticker is empty")
    return Market(
        ticker=w.ticker,
        event_ticker=w.event_ticker,
        status=_enum(w.status, "status", MARKET_STATUSES, notes),
        title=w.title,
        yes_sub_title=w.yes_sub_title,
        market_type=_enum(w.market_type, "market_type", MARKET_TYPES, notes),
        open_time=w.open_time,
        close_time=w.close_time,
        created_time=w.created_time,
        updated_time=w.updated_time,
        result=_enum(w.result, "result", MARKET_RESULTS, notes),
        last_price=_dollars_or_cents(w.last_price_dollars, w.last_price, "last_price", notes),
        yes_bid=_dollars_or_cents(w.yes_bid_dollars, w.yes_bid, "yes_bid", notes),
        yes_ask=_dollars_or_cents(w.yes_ask_dollars, w.yes_ask, "yes_ask", notes),
        yes_bid_size=_decimal(w.yes_bid_size_fp, "yes_bid_size_fp", notes),
        yes_ask_size=_decimal(w.yes_ask_size_fp, "yes_ask_size_fp", notes),
        volume=_fp_or_count(w.volume_fp, w.volume, "volume", notes),
        open_interest=_fp_or_count(w.open_interest_fp, w.open_interest, "open_interest", notes),
        settlement_bounds_type=_enum(
            w.settlement_bounds_type, "settlement_bounds_type", SETTLEMENT_BOUNDS_TYPES, notes
        ),
        settlement_floor=_price(w.settlement_floor_dollars, "settlement_floor_dollars", notes),
        settlement_value=_price(w.settlement_value_dollars, "settlement_value_dollars", notes),
        exchange_index=w.exchange_index,
        notes=tuple(notes) if notes else (),
    )


_MARKET_WIRE_DECODER = msgspec.json.Decoder(_MarketWire)


def _market_object(raw: bytes, where: str) -> Market:
    """One market object on its own: strict, else tolerant with notes. Raises ValueError or
    msgspec.DecodeError when nothing can be read (not an object, no ticker, bad JSON)."""
    notes: list[str] = []
    try:
        wire = _MARKET_WIRE_DECODER.decode(raw)
    except msgspec.ValidationError:
        wire = _lenient(_json(raw), _MarketWire, where, notes)
    if not notes:
        try:
            return market_from_wire(wire)
        except (ValueError, ArithmeticError):
            pass
    return market_from_wire(wire, notes)


def _describe_skip(raw: bytes, where: str, exc: BaseException) -> str:
    preview = bytes(raw)[:120].decode("utf-8", "replace")
    return f"{where} skipped ({type(exc).__name__}: {exc}): {preview}"


class MarketsPage(msgspec.Struct, frozen=True):
    markets: list[Market]
    cursor: str
    skipped: tuple[str, ...] = ()  # objects that could not be read at all, each with the reason


class _MarketsPageWire(msgspec.Struct):
    markets: list[msgspec.Raw]
    cursor: str | None = ""


class _MarketBodyWire(msgspec.Struct):
    market: msgspec.Raw


class Event(msgspec.Struct, frozen=True):
    event_ticker: str
    series_ticker: str | None = None
    title: str | None = None
    sub_title: str | None = None
    exchange_index: int | None = None
    markets: list[Market] | None = None
    notes: tuple[str, ...] = ()


class EventsPage(msgspec.Struct, frozen=True):
    events: list[Event]
    cursor: str
    skipped: tuple[str, ...] = ()


class _EventWire(msgspec.Struct):
    event_ticker: str
    series_ticker: str | None = None
    title: str | None = None
    sub_title: str | None = None
    exchange_index: int | None = None
    markets: list[msgspec.Raw] | None = None


class _EventsPageWire(msgspec.Struct):
    events: list[msgspec.Raw]
    cursor: str | None = ""


class ExchangeIndexStatus(msgspec.Struct, frozen=True):
    """One matching-engine shard's state in `GET /exchange/status`."""

    exchange_index: int
    description: str = ""
    exchange_active: bool | None = None
    trading_active: bool | None = None
    intra_exchange_transfers_active: bool | None = None


class ExchangeStatus(msgspec.Struct, frozen=True):
    exchange_active: bool
    trading_active: bool
    exchange_estimated_resume_time: datetime | None = None
    intra_exchange_transfers_active: bool | None = None
    exchange_index_statuses: list[ExchangeIndexStatus] | None = None


_PAGE_DECODER = msgspec.json.Decoder(_MarketsPageWire)
_MARKET_DECODER = msgspec.json.Decoder(_MarketBodyWire)
_EVENTS_DECODER = msgspec.json.Decoder(_EventsPageWire)
_EVENT_DECODER = msgspec.json.Decoder(_EventWire)
_STATUS_DECODER = msgspec.json.Decoder(ExchangeStatus)
_UNREADABLE = (msgspec.DecodeError, ValueError, ArithmeticError, RecursionError)


def _rest(decoder: msgspec.json.Decoder, body: bytes, what: str) -> Any:
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise FrameDecodeError(f"{what}: {type(exc).__name__}: {exc}", body) from None


def _markets(raws: list[msgspec.Raw], where: str, skipped: list[str]) -> list[Market]:
    out = []
    for i, raw in enumerate(raws):
        at = f"{where}[{i}]"
        try:
            out.append(_market_object(raw, at))
        except _UNREADABLE as exc:
            skipped.append(_describe_skip(raw, at, exc))
    return out


def decode_markets_page(body: bytes) -> MarketsPage:
    """The envelope first, then each market on its own: one odd market never costs the page."""
    wire = _rest(_PAGE_DECODER, body, "GET /markets body")
    skipped: list[str] = []
    markets = _markets(wire.markets, "markets", skipped)
    return MarketsPage(markets=markets, cursor=wire.cursor or "", skipped=tuple(skipped))


class _CursorWire(msgspec.Struct):
    markets: list[msgspec.Raw] | None = None
    events: list[msgspec.Raw] | None = None
    cursor: str | None = ""


_CURSOR_DECODER = msgspec.json.Decoder(_CursorWire)


def decode_page_cursor(body: bytes, what: str) -> str:
    """Only the `cursor` of a page (the objects are left to the writer), `""` on the last."""
    return _rest(_CURSOR_DECODER, body, what).cursor or ""


def decode_market(body: bytes) -> Market:
    wire = _rest(_MARKET_DECODER, body, "GET /markets/{ticker} body")
    try:
        return _market_object(wire.market, "market")
    except _UNREADABLE as exc:
        raise FrameDecodeError(
            f"GET /markets/{{ticker}} body: {type(exc).__name__}: {exc}", body
        ) from None


def _event_object(raw: bytes, where: str, skipped: list[str]) -> Event:
    notes: list[str] = []
    try:
        wire = _EVENT_DECODER.decode(raw)
    except msgspec.ValidationError:
        wire = _lenient(_json(raw), _EventWire, where, notes)
    if not wire.event_ticker:
        raise ValueError("event_ticker is empty")
    return Event(
        event_ticker=wire.event_ticker,
        series_ticker=wire.series_ticker,
        title=wire.title,
        sub_title=wire.sub_title,
        exchange_index=wire.exchange_index,
        markets=(
            _markets(wire.markets, f"{where}.markets", skipped)
            if wire.markets is not None
            else None
        ),
        notes=tuple(notes),
    )


def decode_events_page(body: bytes) -> EventsPage:
    wire = _rest(_EVENTS_DECODER, body, "GET /events body")
    skipped: list[str] = []
    events = []
    for i, raw in enumerate(wire.events):
        at = f"events[{i}]"
        try:
            events.append(_event_object(raw, at, skipped))
        except _UNREADABLE as exc:
            skipped.append(_describe_skip(raw, at, exc))
    return EventsPage(events=events, cursor=wire.cursor or "", skipped=tuple(skipped))


def decode_exchange_status(body: bytes) -> ExchangeStatus:
    return _rest(_STATUS_DECODER, body, "GET /exchange/status body")


# --------------------------------------------------------------------------- REST books and trades


class _BookFpWire(msgspec.Struct):
    """`orderbook_fp`: `[price_dollars, count_fp]` pairs, ascending (the best bid last)."""

    yes_dollars: list[tuple[str, str]] | None = None
    no_dollars: list[tuple[str, str]] | None = None


class _BookLegacyWire(msgspec.Struct):
    """`orderbook` before 2026-03-12: integer cents and counts."""

    yes: list[tuple[int, int]] | None = None
    no: list[tuple[int, int]] | None = None


class _BookWire(msgspec.Struct):
    ticker: str | None = None
    orderbook_fp: _BookFpWire | None = None
    orderbook: _BookLegacyWire | None = None


class OrderbooksPage(msgspec.Struct, frozen=True):
    """`GET /markets/orderbooks`: the books found, by ticker; tickers the exchange does not
    list are simply absent (Kalshi leaves them out)."""

    books: dict[str, BookSnapshot]
    skipped: tuple[str, ...] = ()


class _OrderbooksWire(msgspec.Struct):
    orderbooks: list[msgspec.Raw] | None = None


def _book_object(wire: _BookWire, ticker: str, notes: Notes) -> BookSnapshot:
    fp, legacy = wire.orderbook_fp, wire.orderbook
    return BookSnapshot(
        market_ticker=ticker,
        yes=_levels(fp.yes_dollars if fp else None, legacy.yes if legacy else None, "yes", notes),
        no=_levels(fp.no_dollars if fp else None, legacy.no if legacy else None, "no", notes),
        notes=tuple(notes) if notes else (),
    )


def _book(wire: _BookWire, ticker: str) -> BookSnapshot:
    """Strict first; a value that breaks a rule, again tolerantly, with notes."""
    try:
        return _book_object(wire, ticker, None)
    except (ValueError, ArithmeticError):
        return _book_object(wire, ticker, [])


_BOOK_DECODER = msgspec.json.Decoder(_BookWire)
_BOOKS_DECODER = msgspec.json.Decoder(_OrderbooksWire)


def decode_orderbook(body: bytes, ticker: str) -> BookSnapshot:
    """`GET /markets/{ticker}/orderbook` as a `BookSnapshot` of `ticker` (no sid, no seq): both
    sides are bids, NO at NO-leg prices, levels in the order sent (ascending, best last)."""
    where = "GET /markets/{ticker}/orderbook body"
    wire = _rest(_BOOK_DECODER, body, where)
    try:
        return _book(wire, ticker)
    except _UNREADABLE as exc:
        raise FrameDecodeError(f"{where}: {type(exc).__name__}: {exc}", body) from None


def decode_orderbooks(body: bytes) -> OrderbooksPage:
    """`GET /markets/orderbooks`: the envelope first, then each book on its own, so one odd book
    never costs the others."""
    wire = _rest(_BOOKS_DECODER, body, "GET /markets/orderbooks body")
    books: dict[str, BookSnapshot] = {}
    skipped: list[str] = []
    for i, raw in enumerate(wire.orderbooks or ()):
        at = f"orderbooks[{i}]"
        notes: list[str] = []
        try:
            try:
                one = _BOOK_DECODER.decode(raw)
            except msgspec.ValidationError:
                one = _lenient(_json(raw), _BookWire, at, notes)
            if not one.ticker:
                raise ValueError("ticker is missing or empty")
            book = _book(one, one.ticker)
            if notes:
                book = msgspec.structs.replace(book, notes=(*notes, *book.notes))
            books[one.ticker] = book
        except _UNREADABLE as exc:
            skipped.append(_describe_skip(raw, at, exc))
    return OrderbooksPage(books=books, skipped=tuple(skipped))


class _RestTradeWire(msgspec.Struct):
    """A `GET /markets/trades` object: `ticker` (not `market_ticker`) and `created_time`."""

    trade_id: str
    ticker: str
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    count_fp: str | None = None
    taker_side: str | None = None
    taker_outcome_side: str | None = None
    taker_book_side: str | None = None
    is_block_trade: bool | None = None
    created_time: str | None = None
    # legacy
    yes_price: int | None = None
    no_price: int | None = None
    count: int | None = None


class TradesPage(msgspec.Struct, frozen=True):
    """`GET /markets/trades`: newest first; `cursor` is `""` on the last page."""

    trades: list[Trade]
    cursor: str
    skipped: tuple[str, ...] = ()


class _TradesPageWire(msgspec.Struct):
    trades: list[msgspec.Raw] | None = None
    cursor: str | None = ""


def _rest_trade(w: _RestTradeWire, notes: Notes) -> Trade:
    ts: int | None = None
    if w.created_time:
        try:
            ts = parse_rfc3339_ms(w.created_time)
        except ValueError as exc:
            ts = _odd(notes, f"created_time: {exc}; stored as NULL", None)
    msg = _TradeMsg(
        trade_id=w.trade_id,
        market_ticker=w.ticker,
        yes_price_dollars=w.yes_price_dollars,
        no_price_dollars=w.no_price_dollars,
        count_fp=w.count_fp,
        taker_side=w.taker_side,
        taker_outcome_side=w.taker_outcome_side,
        taker_book_side=w.taker_book_side,
        is_block_trade=w.is_block_trade,
        ts_ms=ts,
        yes_price=w.yes_price,
        no_price=w.no_price,
        count=w.count,
    )
    return trade_from_wire(msg, notes=notes)


_REST_TRADE_DECODER = msgspec.json.Decoder(_RestTradeWire)
_TRADES_DECODER = msgspec.json.Decoder(_TradesPageWire)


def _trade_object(raw: bytes, where: str) -> Trade:
    notes: list[str] = []
    try:
        wire = _REST_TRADE_DECODER.decode(raw)
    except msgspec.ValidationError:
        wire = _lenient(_json(raw), _RestTradeWire, where, notes)
    if not notes:
        try:
            return _rest_trade(wire, None)
        except (ValueError, ArithmeticError):
            pass
    return _rest_trade(wire, notes)


def decode_trades_page(body: bytes) -> TradesPage:
    """The envelope first, then each trade on its own: one odd trade never costs the page."""
    wire = _rest(_TRADES_DECODER, body, "GET /markets/trades body")
    trades: list[Trade] = []
    skipped: list[str] = []
    for i, raw in enumerate(wire.trades or ()):
        at = f"trades[{i}]"
        try:
            trades.append(_trade_object(raw, at))
        except _UNREADABLE as exc:
            skipped.append(_describe_skip(raw, at, exc))
    return TradesPage(trades=trades, cursor=wire.cursor or "", skipped=tuple(skipped))

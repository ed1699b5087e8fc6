"""Kalshi frames and REST bodies decoded into typed records with exact decimals.

Both the current wire shape (dollar strings, `*_fp` counts, `ts_ms`) and the legacy one
(integer cents and counts, before 2026-03-12) decode to the same records. Every ticker field but
`market_ticker` is optional. A frame that does not decode raises `FrameDecodeError` carrying the
raw bytes; a well-formed frame of a type we do not model decodes to `UnknownMessage`.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from kalshi_pipeline.kalshi.errors import FrameDecodeError, SubscriptionError, subscription_error

CENT = Decimal("0.01")
ZERO = Decimal(0)
ONE = Decimal(1)
MAX_COUNT = Decimal(10) ** 15
_QUANTUM = {2: Decimal("0.01"), 4: Decimal("0.0001")}

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
    """A `market_lifecycle_v2` msg: created, activated, deactivated, determined, settled, ..."""

    market_ticker: str
    event_type: str
    open_ts: int | None = None
    close_ts: int | None = None
    determination_ts: int | None = None
    settled_ts: int | None = None
    result: str | None = None
    settlement_value: str | None = None
    is_deactivated: bool | None = None
    exchange_index: int | None = None
    additional_metadata: LifecycleMetadata | None = None
    price_level_structure: str | None = None
    sid: int | None = None
    seq: int | None = None


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


class UnknownMessage(msgspec.Struct, frozen=True):
    type: str
    raw: bytes


Message = (
    Tick
    | MarketLifecycle
    | EventLifecycle
    | Subscribed
    | Ok
    | Unsubscribed
    | ErrorMessage
    | UnknownMessage
)

# --------------------------------------------------------------------------- wire shapes


class _TickerMsg(msgspec.Struct):
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


class _TickerFrame(msgspec.Struct, tag_field="type", tag="ticker"):
    msg: _TickerMsg
    sid: int | None = None


class _LifecycleFrame(msgspec.Struct, tag_field="type", tag="market_lifecycle_v2"):
    msg: MarketLifecycle
    sid: int | None = None
    seq: int | None = None


class _EventLifecycleFrame(msgspec.Struct, tag_field="type", tag="event_lifecycle"):
    msg: EventLifecycle
    sid: int | None = None
    seq: int | None = None


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
        "market_lifecycle_v2",
        "event_lifecycle",
        "subscribed",
        "ok",
        "unsubscribed",
        "error",
    }
)

# --------------------------------------------------------------------------- conversion


def _decimal(
    value: str | None,
    field: str,
    *,
    lo: Decimal | None = ZERO,
    hi: Decimal | None = None,
    places: int = 2,
) -> Decimal | None:
    """An exact decimal from a wire string; out of range or too precise raises ValueError."""
    if value is None or value == "":
        return None
    try:
        d = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{field}={value!r} is not a decimal") from None
    if not d.is_finite() or (lo is not None and d < lo) or (hi is not None and d > hi):
        raise ValueError(f"{field}={value!r} is out of range")
    if d >= MAX_COUNT:
        raise ValueError(f"{field}={value!r} is too large")
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -places and d != d.quantize(_QUANTUM[places]):
        raise ValueError(f"{field}={value!r} has more than {places} decimal places")
    return d


def _price(value: str | None, field: str) -> Decimal | None:
    return _decimal(value, field, lo=ZERO, hi=ONE, places=4)


def _cents(value: int | None, field: str) -> Decimal | None:
    if value is None:
        return None
    if not 0 <= value <= 100:
        raise ValueError(f"{field}={value!r} cents is out of range")
    return Decimal(value) * CENT


def _count(value: int | None, field: str) -> Decimal | None:
    if value is None:
        return None
    if not 0 <= value < MAX_COUNT:
        raise ValueError(f"{field}={value!r} is out of range")
    return Decimal(value)


def _whole(value: int | float | None) -> int | None:
    return None if value is None else int(value)


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


def _exchange_ms(m: _TickerMsg) -> int | None:
    if m.ts_ms is not None:
        ms = m.ts_ms
    elif m.ts is not None:
        ms = m.ts * 1000
    elif m.time:
        ms = parse_rfc3339_ms(m.time)
    else:
        return None
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise ValueError(f"exchange timestamp {ms} ms is outside 1970..9999")
    return ms


def _dollars_or_cents(dollars: str | None, cents: int | None, name: str) -> Decimal | None:
    """The current dollar string if present, else the legacy integer cents."""
    if dollars is not None:
        return _price(dollars, f"{name}_dollars")
    return _cents(cents, name)


def _fp_or_count(fp: str | None, count: int | None, name: str) -> Decimal | None:
    """The current `*_fp` count string if present, else the legacy integer count."""
    if fp is not None:
        return _decimal(fp, f"{name}_fp")
    return _count(count, name)


def tick_from_wire(m: _TickerMsg, sid: int | None = None) -> Tick:
    if not m.market_ticker:
        raise ValueError("market_ticker is empty")
    return Tick(
        market_ticker=m.market_ticker,
        market_id=m.market_id or None,
        price=_dollars_or_cents(m.price_dollars, m.price, "price"),
        yes_bid=_dollars_or_cents(m.yes_bid_dollars, m.yes_bid, "yes_bid"),
        yes_ask=_dollars_or_cents(m.yes_ask_dollars, m.yes_ask, "yes_ask"),
        yes_bid_size=_decimal(m.yes_bid_size_fp, "yes_bid_size_fp"),
        yes_ask_size=_decimal(m.yes_ask_size_fp, "yes_ask_size_fp"),
        last_trade_size=_decimal(m.last_trade_size_fp, "last_trade_size_fp"),
        volume=_fp_or_count(m.volume_fp, m.volume, "volume"),
        open_interest=_fp_or_count(m.open_interest_fp, m.open_interest, "open_interest"),
        dollar_volume=_whole(m.dollar_volume),
        dollar_open_interest=_whole(m.dollar_open_interest),
        exchange_ts_ms=_exchange_ms(m),
        sid=sid,
    )


def _convert(frame: Any, raw: bytes) -> Message:
    match frame:
        case _TickerFrame(msg=m, sid=sid):
            return tick_from_wire(m, sid)
        case _LifecycleFrame(msg=m, sid=sid, seq=seq):
            return msgspec.structs.replace(m, sid=sid, seq=seq)
        case _EventLifecycleFrame(msg=m, sid=sid, seq=seq):
            return msgspec.structs.replace(m, sid=sid, seq=seq)
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
        raise FrameDecodeError(reason, data) from None
    except (ValueError, ArithmeticError, RecursionError) as exc:
        raise FrameDecodeError(f"{type(exc).__name__}: {exc}", data) from None


def decode_tick(raw: bytes) -> Tick:
    """Decode a frame known to be a ticker frame: the engine's fast path."""
    try:
        frame = _TICKER_DECODER.decode(raw)
        return tick_from_wire(frame.msg, frame.sid)
    except msgspec.DecodeError as exc:
        raise FrameDecodeError(str(exc), raw) from None
    except (ValueError, ArithmeticError, RecursionError) as exc:
        raise FrameDecodeError(f"{type(exc).__name__}: {exc}", raw) from None


# --------------------------------------------------------------------------- REST bodies


class Market(msgspec.Struct, frozen=True):
    """A REST market object (kalshi-protocol.md §4.2), its L1 normalised like a `Tick`."""

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
    # legacy
    last_price: int | None = None
    yes_bid: int | None = None
    yes_ask: int | None = None
    volume: int | None = None
    open_interest: int | None = None


def market_from_wire(w: _MarketWire) -> Market:
    return Market(
        ticker=w.ticker,
        event_ticker=w.event_ticker,
        status=w.status,
        title=w.title,
        yes_sub_title=w.yes_sub_title,
        market_type=w.market_type,
        open_time=w.open_time,
        close_time=w.close_time,
        created_time=w.created_time,
        updated_time=w.updated_time,
        result=w.result,
        last_price=_dollars_or_cents(w.last_price_dollars, w.last_price, "last_price"),
        yes_bid=_dollars_or_cents(w.yes_bid_dollars, w.yes_bid, "yes_bid"),
        yes_ask=_dollars_or_cents(w.yes_ask_dollars, w.yes_ask, "yes_ask"),
        yes_bid_size=_decimal(w.yes_bid_size_fp, "yes_bid_size_fp"),
        yes_ask_size=_decimal(w.yes_ask_size_fp, "yes_ask_size_fp"),
        volume=_fp_or_count(w.volume_fp, w.volume, "volume"),
        open_interest=_fp_or_count(w.open_interest_fp, w.open_interest, "open_interest"),
    )


class MarketsPage(msgspec.Struct, frozen=True):
    markets: list[Market]
    cursor: str


class _MarketsPageWire(msgspec.Struct):
    markets: list[_MarketWire]
    cursor: str | None = ""


class _MarketBodyWire(msgspec.Struct):
    market: _MarketWire


class Event(msgspec.Struct, frozen=True):
    event_ticker: str
    series_ticker: str | None = None
    title: str | None = None
    sub_title: str | None = None
    markets: list[Market] | None = None


class EventsPage(msgspec.Struct, frozen=True):
    events: list[Event]
    cursor: str


class _EventWire(msgspec.Struct):
    event_ticker: str
    series_ticker: str | None = None
    title: str | None = None
    sub_title: str | None = None
    markets: list[_MarketWire] | None = None


class _EventsPageWire(msgspec.Struct):
    events: list[_EventWire]
    cursor: str | None = ""


class ExchangeStatus(msgspec.Struct, frozen=True):
    exchange_active: bool
    trading_active: bool
    exchange_estimated_resume_time: datetime | None = None


_PAGE_DECODER = msgspec.json.Decoder(_MarketsPageWire)
_MARKET_DECODER = msgspec.json.Decoder(_MarketBodyWire)
_EVENTS_DECODER = msgspec.json.Decoder(_EventsPageWire)
_STATUS_DECODER = msgspec.json.Decoder(ExchangeStatus)


def _rest(decoder: msgspec.json.Decoder, body: bytes, what: str) -> Any:
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise FrameDecodeError(f"{what}: {type(exc).__name__}: {exc}", body) from None


def decode_markets_page(body: bytes) -> MarketsPage:
    wire = _rest(_PAGE_DECODER, body, "GET /markets body")
    try:
        return MarketsPage(
            markets=[market_from_wire(m) for m in wire.markets], cursor=wire.cursor or ""
        )
    except (ValueError, ArithmeticError) as exc:
        raise FrameDecodeError(f"GET /markets body: {exc}", body) from None


def decode_market(body: bytes) -> Market:
    wire = _rest(_MARKET_DECODER, body, "GET /markets/{ticker} body")
    try:
        return market_from_wire(wire.market)
    except (ValueError, ArithmeticError) as exc:
        raise FrameDecodeError(f"GET /markets/{{ticker}} body: {exc}", body) from None


def decode_events_page(body: bytes) -> EventsPage:
    wire = _rest(_EVENTS_DECODER, body, "GET /events body")
    try:
        events = [
            Event(
                event_ticker=e.event_ticker,
                series_ticker=e.series_ticker,
                title=e.title,
                sub_title=e.sub_title,
                markets=[market_from_wire(m) for m in e.markets] if e.markets is not None else None,
            )
            for e in wire.events
        ]
    except (ValueError, ArithmeticError) as exc:
        raise FrameDecodeError(f"GET /events body: {exc}", body) from None
    return EventsPage(events=events, cursor=wire.cursor or "")


def decode_exchange_status(body: bytes) -> ExchangeStatus:
    return _rest(_STATUS_DECODER, body, "GET /exchange/status body")

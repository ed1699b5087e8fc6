"""Fuzzing the decoders: whatever arrives, the only exception is `FrameDecodeError`.

Valid frames and REST bodies are built by strategies, then broken: fields swapped for values of
other types, huge numbers, NaN tokens, byte-level truncation, flips, inserted junk and deep
nesting. A decoder may accept or refuse each input, but it must never raise anything else (the
WebSocket reader and the poller rely on that to count a bad frame instead of dying).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kalshi_pipeline.kalshi.errors import FrameDecodeError
from kalshi_pipeline.kalshi.messages import (
    ErrorMessage,
    EventLifecycle,
    MarketLifecycle,
    Ok,
    Subscribed,
    Tick,
    UnknownMessage,
    Unsubscribed,
    decode_events_page,
    decode_frame,
    decode_market,
    decode_markets_page,
    decode_tick,
)

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- valid shapes

tickers = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.", min_size=1, max_size=30)
ids = st.integers(min_value=0, max_value=2**31)
cents = st.integers(min_value=0, max_value=100)
counts = st.integers(min_value=0, max_value=10**9)
timestamps = st.integers(min_value=0, max_value=4_102_444_800)


def dollars(c: int) -> str:
    return f"{c / 100:.4f}"


def fp(n: int) -> str:
    return f"{n}.{n % 100:02d}"


@st.composite
def current_ticker_msgs(draw: st.DrawFn) -> dict[str, Any]:
    ts = draw(timestamps)
    msg: dict[str, Any] = {
        "market_id": draw(st.uuids()).hex,
        "market_ticker": draw(tickers),
        "price_dollars": dollars(draw(cents)),
        "yes_bid_dollars": dollars(draw(cents)),
        "yes_ask_dollars": dollars(draw(cents)),
        "volume_fp": fp(draw(counts)),
        "open_interest_fp": fp(draw(counts)),
        "dollar_volume": draw(counts),
        "dollar_open_interest": draw(counts),
        "yes_bid_size_fp": fp(draw(counts)),
        "yes_ask_size_fp": fp(draw(counts)),
        "last_trade_size_fp": fp(draw(counts)),
        "ts": ts,
        "ts_ms": ts * 1000 + draw(st.integers(0, 999)),
        "time": "2026-09-21T05:00:00Z",
    }
    # every field but market_ticker is optional on the wire
    keep = draw(st.sets(st.sampled_from(sorted(msg))))
    return {k: v for k, v in msg.items() if k in keep or k == "market_ticker"}


@st.composite
def legacy_ticker_msgs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "market_ticker": draw(tickers),
        "yes_bid": draw(cents),
        "yes_ask": draw(cents),
        "price": draw(cents),
        "volume": draw(counts),
        "open_interest": draw(counts),
        "ts": draw(timestamps),
    }


def envelope(kind: str, msg: Any, **extra: Any) -> dict[str, Any]:
    return {"type": kind, **extra, "msg": msg}


@st.composite
def valid_frames(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            [
                "ticker",
                "legacy_ticker",
                "market_lifecycle_v2",
                "event_lifecycle",
                "subscribed",
                "ok",
                "ok_list",
                "unsubscribed",
                "error",
                "unknown",
            ]
        )
    )
    sid, seq, cmd_id = draw(ids), draw(ids), draw(ids)
    if kind == "ticker":
        return envelope("ticker", draw(current_ticker_msgs()), sid=sid)
    if kind == "legacy_ticker":
        return envelope("ticker", draw(legacy_ticker_msgs()), sid=sid)
    if kind == "market_lifecycle_v2":
        msg = {
            "market_ticker": draw(tickers),
            "event_type": draw(st.sampled_from(["created", "determined", "settled"])),
            "open_ts": draw(timestamps),
            "close_ts": draw(timestamps),
            "result": draw(st.sampled_from(["yes", "no", ""])),
            "settlement_value": dollars(draw(cents)),
            "additional_metadata": {"title": "t", "can_close_early": True, "floor_strike": 1.5},
        }
        return envelope(kind, msg, sid=sid, seq=seq)
    if kind == "event_lifecycle":
        msg = {"event_ticker": draw(tickers), "series_ticker": draw(tickers), "title": "t"}
        return envelope(kind, msg, sid=sid, seq=seq)
    if kind == "subscribed":
        return envelope(kind, {"channel": "ticker", "sid": sid}, id=cmd_id)
    if kind == "ok":
        markets = draw(st.lists(tickers, max_size=5))
        return envelope(kind, {"market_tickers": markets}, id=cmd_id, sid=sid, seq=seq)
    if kind == "ok_list":
        subs = [{"channel": "ticker", "sid": s} for s in draw(st.lists(ids, max_size=4))]
        return envelope("ok", subs, id=cmd_id)
    if kind == "unsubscribed":
        return {"type": kind, "id": cmd_id, "sid": sid, "seq": seq}
    if kind == "error":
        return envelope(kind, {"code": draw(st.integers(1, 28)), "msg": "x"}, id=cmd_id)
    return envelope(draw(st.sampled_from(["fill", "market_position", "user_order"])), {"a": 1})


EXPECTED_TYPES: dict[str, tuple[type, ...]] = {
    "ticker": (Tick,),
    "market_lifecycle_v2": (MarketLifecycle,),
    "event_lifecycle": (EventLifecycle,),
    "subscribed": (Subscribed,),
    "ok": (Ok,),
    "unsubscribed": (Unsubscribed,),
    "error": (ErrorMessage,),
}


@st.composite
def market_objects(draw: st.DrawFn) -> dict[str, Any]:
    market: dict[str, Any] = {
        "ticker": draw(tickers),
        "event_ticker": draw(tickers),
        "status": draw(st.sampled_from(["active", "initialized", "finalized", "determined"])),
        "title": "t",
        "market_type": "binary",
        "open_time": "2026-06-11T05:39:29Z",
        "close_time": "2026-06-25T16:00:00Z",
        "created_time": "2026-06-11T05:12:22.338653Z",
        "updated_time": "2026-06-11T05:39:31.28563Z",
        "result": "",
        "last_price_dollars": dollars(draw(cents)),
        "yes_bid_dollars": dollars(draw(cents)),
        "yes_ask_dollars": dollars(draw(cents)),
        "yes_bid_size_fp": fp(draw(counts)),
        "yes_ask_size_fp": fp(draw(counts)),
        "volume_fp": fp(draw(counts)),
        "open_interest_fp": fp(draw(counts)),
    }
    if draw(st.booleans()):  # legacy integer twins
        market.update(last_price=draw(cents), yes_bid=draw(cents), volume=draw(counts))
    return market


@st.composite
def valid_rest_bodies(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["page", "market", "events"]))
    cursor = draw(st.sampled_from(["", "CgwIuKKp0QYQ-MDV3QIS", None]))
    if kind == "page":
        return {"markets": draw(st.lists(market_objects(), max_size=3)), "cursor": cursor}
    if kind == "market":
        return {"market": draw(market_objects())}
    events = [
        {
            "event_ticker": draw(tickers),
            "series_ticker": draw(tickers),
            "title": "t",
            "sub_title": "s",
            "markets": draw(st.lists(market_objects(), max_size=2)),
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    return {"events": events, "cursor": cursor}


# --------------------------------------------------------------------------- breaking them

RAW = "\x00raw\x00"  # marks a value to be replaced by a raw (possibly invalid) JSON token
RAW_TOKENS = [
    b"1e400",
    b"-1e400",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"123456789012345678901234567890",
    b"-123456789012345678901234567890",
    b"1" + b"0" * 400,
    b"0.1e-400",
    b"18446744073709551616",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"1.7976931348623157e309",
    b"-0",
    b"0x10",
    b"01",
    b"true",
    b"null",
    b'"\\ud800"',
    b'"\\u0000"',
]

decimal_strings = st.one_of(
    st.from_regex(r"-?[0-9]{0,40}(\.[0-9]{0,40})?([eE][-+]?[0-9]{1,12})?", fullmatch=True),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    # long and precise: the boundaries of Decimal's 28-digit context
    st.builds(
        "{}.{}".format,
        st.integers(0, 10**40),
        st.text(alphabet="0123456789", min_size=1, max_size=8),
    ),
    st.sampled_from(["0.00001", "1.00001", "123456789012345678901234567890.123", "1e15", "-0"]),
)
other_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "NaN",
            "Infinity",
            "-1",
            "1.5",
            "1e999999",
            "0.0100",
            "-0.0000",
            "0.00001",
            "123456789012345678901234567890.123",
        ]
    ),
    st.from_regex(r"-?[0-9]{0,40}(\.[0-9]{0,40})?([eE][-+]?[0-9]{1,12})?", fullmatch=True),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.just(RAW),
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside a JSON value, so any field can be swapped."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    if isinstance(value, dict):
        return {k: replaced(v, tuple(rest), new) if k == head else v for k, v in value.items()}
    return [replaced(v, tuple(rest), new) if i == head else v for i, v in enumerate(value)]


@st.composite
def type_swapped(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """A valid document with 0-3 values swapped for other types, serialised (NaN allowed)."""
    doc: Any = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(paths(doc)))
        doc = replaced(doc, path, draw(other_values))
    numeric = [p for p in paths(doc) if p and str(p[-1]).endswith(("_fp", "_dollars"))]
    if numeric and draw(st.booleans()):  # decimal strings at the edges of their range
        doc = replaced(doc, draw(st.sampled_from(numeric)), draw(decimal_strings))
    text = json.dumps(doc, allow_nan=True, separators=draw(st.sampled_from([None, (",", ":")])))
    data = text.encode("utf-8", "surrogatepass")
    raw_marker = json.dumps(RAW).encode()
    while raw_marker in data:
        data = data.replace(raw_marker, draw(st.sampled_from(RAW_TOKENS)), 1)
    return data + draw(st.sampled_from([b"", b"\n", b" \r\n", b"\t"]))


@st.composite
def byte_mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """Truncations, byte flips, inserted junk, deleted or duplicated spans."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "duplicate"]))
        at = draw(st.integers(0, len(buf)))
        if op == "truncate":
            del buf[at:]
        elif op == "flip" and at < len(buf):
            buf[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            junk = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=8),
                    st.sampled_from(
                        [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\xff", b"\xc3"]
                    ),
                    st.sampled_from(RAW_TOKENS),
                )
            )
            buf[at:at] = junk
        elif op == "delete":
            del buf[at : at + draw(st.integers(1, 16))]
        elif op == "duplicate":
            buf[at:at] = buf[at : at + draw(st.integers(1, 16))]
    return bytes(buf)


@st.composite
def broken(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """Half the documents keep valid JSON (only values swapped), half are also byte-mutated."""
    data = draw(type_swapped(base))
    return draw(byte_mutated(data)) if draw(st.booleans()) else data


@st.composite
def deeply_nested(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """A valid document with one value (or a new field) replaced by a deep array/object nest."""
    doc: Any = draw(base)
    depth = draw(st.sampled_from([2, 64, 255, 256, 257, 1_000, 2_048, 10_000, 50_000]))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]")]))
    nest = opener * depth + b"1" + closer * depth
    candidates = [p for p in paths(doc) if p]
    if draw(st.booleans()) or not candidates:
        target: Any = doc.setdefault("msg", {}) if isinstance(doc.get("msg"), dict) else doc
        target["zz_extra"] = RAW
    else:
        doc = replaced(doc, draw(st.sampled_from(candidates)), RAW)
    return json.dumps(doc).encode().replace(json.dumps(RAW).encode(), nest, 1)


def refuses_only_with_frame_decode_error(decode: Callable[[bytes], Any], data: bytes) -> None:
    """Decode; any exception other than FrameDecodeError (with the input kept) fails the test."""
    try:
        decode(data)
    except FrameDecodeError as exc:
        assert exc.raw == data


# --------------------------------------------------------------------------- the properties


@settings(FUZZ, max_examples=600)
@given(doc=valid_frames())
def test_generated_valid_frames_decode_to_their_record_type(doc: dict[str, Any]) -> None:
    data = json.dumps(doc).encode() + b"\n"
    message = decode_frame(data)
    if doc["type"] in EXPECTED_TYPES:
        assert isinstance(message, EXPECTED_TYPES[doc["type"]])
    else:
        assert message == UnknownMessage(type=doc["type"], raw=data)
    if doc["type"] == "ticker":
        assert decode_tick(data) == message
        assert message.market_ticker == doc["msg"]["market_ticker"]


@settings(FUZZ, max_examples=800)
@given(data=broken(valid_frames()))
def test_mutated_frames_only_ever_raise_frame_decode_error(data: bytes) -> None:
    refuses_only_with_frame_decode_error(decode_frame, data)
    refuses_only_with_frame_decode_error(decode_tick, data)


NUMERIC_TICKER_FIELDS = [
    "price_dollars",
    "yes_bid_dollars",
    "yes_ask_dollars",
    "volume_fp",
    "open_interest_fp",
    "yes_bid_size_fp",
    "yes_ask_size_fp",
    "last_trade_size_fp",
]


@settings(FUZZ, max_examples=500)
@given(
    msg=current_ticker_msgs(),
    field=st.sampled_from(NUMERIC_TICKER_FIELDS),
    value=decimal_strings,
)
def test_any_decimal_string_in_a_ticker_field_only_raises_frame_decode_error(
    msg: dict[str, Any], field: str, value: str
) -> None:
    data = json.dumps({"type": "ticker", "sid": 1, "msg": {**msg, field: value}}).encode()
    refuses_only_with_frame_decode_error(decode_frame, data)
    refuses_only_with_frame_decode_error(decode_tick, data)
    market = {"ticker": "T", field.replace("price_dollars", "last_price_dollars"): value}
    refuses_only_with_frame_decode_error(decode_market, json.dumps({"market": market}).encode())


@settings(FUZZ, max_examples=500)
@given(data=deeply_nested(valid_frames()))
def test_deeply_nested_frames_only_ever_raise_frame_decode_error(data: bytes) -> None:
    refuses_only_with_frame_decode_error(decode_frame, data)
    refuses_only_with_frame_decode_error(decode_tick, data)


@settings(FUZZ, max_examples=300)
@given(doc=valid_rest_bodies())
def test_generated_valid_rest_bodies_decode(doc: dict[str, Any]) -> None:
    data = json.dumps(doc).encode()
    if "markets" in doc:
        page = decode_markets_page(data)
        assert [m.ticker for m in page.markets] == [m["ticker"] for m in doc["markets"]]
        assert page.cursor == (doc["cursor"] or "")
    elif "market" in doc:
        assert decode_market(data).ticker == doc["market"]["ticker"]
    else:
        page = decode_events_page(data)
        assert [e.event_ticker for e in page.events] == [e["event_ticker"] for e in doc["events"]]


REST_DECODERS = (decode_markets_page, decode_market, decode_events_page)


@settings(FUZZ, max_examples=800)
@given(data=broken(valid_rest_bodies()))
def test_mutated_rest_bodies_only_ever_raise_frame_decode_error(data: bytes) -> None:
    for decode in REST_DECODERS:
        refuses_only_with_frame_decode_error(decode, data)


@settings(FUZZ, max_examples=500)
@given(data=deeply_nested(valid_rest_bodies()))
def test_deeply_nested_rest_bodies_only_ever_raise_frame_decode_error(data: bytes) -> None:
    for decode in REST_DECODERS:
        refuses_only_with_frame_decode_error(decode, data)

"""Decoding WebSocket frames into typed records."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from kalshi_pipeline.kalshi import errors
from kalshi_pipeline.kalshi.errors import FrameDecodeError
from kalshi_pipeline.kalshi.messages import (
    ErrorMessage,
    EventLifecycle,
    MarketLifecycle,
    Ok,
    Subscribed,
    SubscriptionInfo,
    Tick,
    UnknownMessage,
    Unsubscribed,
    decode_events_page,
    decode_exchange_status,
    decode_frame,
    decode_market,
    decode_markets_page,
    decode_tick,
    parse_rfc3339_ms,
)

# a verbatim prod ticker frame
CURRENT_TICKER = (
    b'{"type":"ticker","sid":6,"msg":{"market_id":"4ac7cb26-aacc-420e-860e-5e7f054d8aa8",'
    b'"market_ticker":"KXCRYPTOLEAD15M-26SEP210100-XRP","price_dollars":"0.0100",'
    b'"yes_bid_dollars":"0.0000","yes_ask_dollars":"0.0100","volume_fp":"759.86",'
    b'"open_interest_fp":"666.18","dollar_volume":379,"dollar_open_interest":333,'
    b'"yes_bid_size_fp":"0.00","yes_ask_size_fp":"78.00","last_trade_size_fp":"0.09",'
    b'"ts":1789966800,"ts_ms":1789966800000,"time":"2026-09-21T05:00:00Z"}}'
)

LEGACY_TICKER = (
    b'{"type":"ticker","sid":1,"msg":{"market_ticker":"X","yes_bid":96,"yes_ask":98,'
    b'"price":97,"volume":1000,"open_interest":500,"ts":1717424100}}'
)
CURRENT_EQUIVALENT_OF_LEGACY = (
    b'{"type":"ticker","sid":1,"msg":{"market_ticker":"X","yes_bid_dollars":"0.9600",'
    b'"yes_ask_dollars":"0.9800","price_dollars":"0.9700","volume_fp":"1000.00",'
    b'"open_interest_fp":"500.00","ts":1717424100,"ts_ms":1717424100000,'
    b'"time":"2024-06-03T14:15:00Z"}}'
)


def ticker_frame(**msg: object) -> bytes:
    return json.dumps({"type": "ticker", "sid": 1, "msg": {"market_ticker": "X", **msg}}).encode()


# --------------------------------------------------------------------------- ticker


def test_current_ticker_frame_decodes_to_exact_decimals() -> None:
    tick = decode_frame(CURRENT_TICKER)

    assert tick == Tick(
        market_ticker="KXCRYPTOLEAD15M-26SEP210100-XRP",
        market_id="4ac7cb26-aacc-420e-860e-5e7f054d8aa8",
        price=Decimal("0.0100"),
        yes_bid=Decimal("0.0000"),
        yes_ask=Decimal("0.0100"),
        yes_bid_size=Decimal("0.00"),
        yes_ask_size=Decimal("78.00"),
        last_trade_size=Decimal("0.09"),
        volume=Decimal("759.86"),
        open_interest=Decimal("666.18"),
        dollar_volume=379,
        dollar_open_interest=333,
        exchange_ts_ms=1789966800000,
        sid=6,
    )
    # exact decimals, never floats: the string form survives unchanged
    assert isinstance(tick.price, Decimal)
    assert str(tick.price) == "0.0100"
    assert str(tick.volume) == "759.86"


def test_ticker_fast_path_gives_the_same_tick_as_the_general_decoder() -> None:
    assert decode_tick(CURRENT_TICKER) == decode_frame(CURRENT_TICKER)


def test_exchange_time_comes_from_ts_ms_not_the_deprecated_seconds() -> None:
    tick = decode_frame(ticker_frame(ts=1789966800, ts_ms=1789966800123))
    assert tick.exchange_ts_ms == 1789966800123


def test_exchange_time_falls_back_to_seconds_then_to_rfc3339_time() -> None:
    assert decode_frame(ticker_frame(ts=1789966800)).exchange_ts_ms == 1789966800000
    micro = decode_frame(ticker_frame(time="2026-07-19T15:45:00.544125Z"))
    assert micro.exchange_ts_ms == 1784475900544
    whole = decode_frame(ticker_frame(time="2026-09-21T05:00:00Z"))
    assert whole.exchange_ts_ms == 1789966800000


@pytest.mark.parametrize(
    "time",
    [
        "2026-07-19T15:45:00.5441259Z",
        "2026-07-19T15:45:00.54412599Z",
        "2026-07-19T15:45:00.544125999Z",
    ],
)
def test_rfc3339_nano_time_of_a_ticker_frame_decodes_to_milliseconds(time: str) -> None:
    # `time` is formatted like Go's RFC3339Nano: up to 9 digits
    assert parse_rfc3339_ms(time) == 1784475900544
    assert decode_frame(ticker_frame(time=time)).exchange_ts_ms == 1784475900544


def test_rfc3339_time_with_a_fraction_and_an_offset_honours_the_offset() -> None:
    # 15:45:00.5 at +05:00 is 10:45:00.5 UTC
    assert parse_rfc3339_ms("2026-07-19T15:45:00.5+05:00") == 1784457900500
    assert parse_rfc3339_ms("2026-07-19T15:45:00+05:00") == 1784457900000


def test_legacy_integer_cent_frame_equals_its_current_shape() -> None:
    legacy = decode_frame(LEGACY_TICKER)
    current = decode_frame(CURRENT_EQUIVALENT_OF_LEGACY)

    assert legacy == current
    assert legacy.price == Decimal("0.97")
    assert legacy.yes_bid == Decimal("0.96")
    assert legacy.yes_ask == Decimal("0.98")
    assert legacy.volume == Decimal(1000)
    assert legacy.open_interest == Decimal(500)
    assert legacy.exchange_ts_ms == 1717424100000


def test_frame_with_only_market_ticker_decodes_with_everything_else_none() -> None:
    tick = decode_frame(b'{"type":"ticker","msg":{"market_ticker":"ONLY"}}')
    assert tick == Tick(market_ticker="ONLY")
    assert all(
        getattr(tick, field) is None
        for field in tick.__struct_fields__
        if field not in ("market_ticker", "notes")
    )
    assert tick.notes == ()


@pytest.mark.parametrize(
    "raw",
    [
        CURRENT_TICKER + b"\n",
        CURRENT_TICKER + b"\r\n",
        b"  \t" + CURRENT_TICKER + b" \n\n",
    ],
    ids=["trailing-newline", "crlf", "surrounding-whitespace"],
)
def test_trailing_newline_and_whitespace_are_accepted(raw: bytes) -> None:
    assert decode_frame(raw) == decode_frame(CURRENT_TICKER)
    assert decode_tick(raw) == decode_frame(CURRENT_TICKER)


def test_text_frames_decode_like_bytes() -> None:
    assert decode_frame(CURRENT_TICKER.decode()) == decode_frame(CURRENT_TICKER)


def test_empty_price_string_means_no_price() -> None:
    tick = decode_frame(ticker_frame(price_dollars="", yes_bid_dollars="0.4000"))
    assert tick.price is None
    assert tick.yes_bid == Decimal("0.4000")


def test_no_bid_and_no_ask_placeholders_decode_to_the_boundary_prices() -> None:
    tick = decode_frame(ticker_frame(yes_bid_dollars="0.0000", yes_ask_dollars="1.0000"))
    assert tick.yes_bid == Decimal(0)
    assert tick.yes_ask == Decimal(1)


def test_untraded_market_frame_without_dollar_fields_decodes() -> None:
    # demo quirk of 2026-08-27: dollar_volume, dollar_open_interest and time omitted
    raw = (
        b'{"type":"ticker","sid":2,"msg":{"market_id":"m","market_ticker":"UNTRADED",'
        b'"price_dollars":"0.0000","yes_bid_dollars":"0.0000","yes_ask_dollars":"1.0000",'
        b'"volume_fp":"0.00","open_interest_fp":"0.00","ts":1787838990,"ts_ms":1787838990880}}'
    )
    tick = decode_frame(raw)
    assert tick.dollar_volume is None
    assert tick.dollar_open_interest is None
    assert tick.exchange_ts_ms == 1787838990880
    assert tick.volume == Decimal(0)


# --------------------------------------------------------------------------- command answers


def test_subscribed_frame_decodes() -> None:
    raw = b'{"type":"subscribed","id":1,"msg":{"channel":"orderbook_delta","sid":1}}'
    assert decode_frame(raw) == Subscribed(cmd_id=1, channel="orderbook_delta", sid=1)


def test_ok_frame_carries_the_full_market_list() -> None:
    raw = b'{"type":"ok","id":2,"sid":1,"seq":108,"msg":{"market_tickers":["A-1","B-2"]}}'
    assert decode_frame(raw) == Ok(cmd_id=2, sid=1, seq=108, market_tickers=["A-1", "B-2"])


def test_ok_frame_of_list_subscriptions_decodes_into_subscriptions() -> None:
    raw = (
        b'{"type":"ok","id":3,"msg":[{"channel":"orderbook_delta","sid":1},'
        b'{"channel":"ticker","sid":2}]}'
    )
    ok = decode_frame(raw)
    assert ok == Ok(
        cmd_id=3,
        subscriptions=[
            SubscriptionInfo(channel="orderbook_delta", sid=1),
            SubscriptionInfo(channel="ticker", sid=2),
        ],
    )
    assert ok.market_tickers is None


def test_ok_frame_without_msg_decodes() -> None:
    assert decode_frame(b'{"type":"ok","id":4,"sid":1}') == Ok(cmd_id=4, sid=1)


def test_unsubscribed_frame_decodes() -> None:
    raw = b'{"type":"unsubscribed","id":102,"sid":2,"seq":7}'
    assert decode_frame(raw) == Unsubscribed(cmd_id=102, sid=2, seq=7)


def test_error_frame_decodes_with_code_and_text() -> None:
    raw = b'{"type":"error","id":3,"msg":{"code":8,"msg":"Unknown channel name"}}'
    assert decode_frame(raw) == ErrorMessage(cmd_id=3, code=8, text="Unknown channel name")


def test_subscription_scoped_error_frame_keeps_its_sid() -> None:
    raw = b'{"type":"error","sid":4,"seq":9,"msg":{"code":25,"msg":"buffer overflow"}}'
    message = decode_frame(raw)
    assert message == ErrorMessage(cmd_id=None, code=25, text="buffer overflow", sid=4, seq=9)
    exc = message.to_exception(raw)
    assert exc.sid == 4
    assert exc.raw == raw


@pytest.mark.parametrize("code", sorted(errors.ERROR_CODES))
def test_every_error_code_becomes_its_named_exception(code: int) -> None:
    exc = ErrorMessage(cmd_id=7, code=code, text="server words").to_exception()

    assert type(exc) is errors.ERROR_CODES[code]
    assert isinstance(exc, errors.SubscriptionError)
    assert exc.code == code
    assert exc.terminal is (code in (10, 25))
    assert exc.cmd_id == 7
    assert f"error {code} " in str(exc)
    assert "server words" in str(exc)


def test_the_error_classes_carry_the_protocol_names() -> None:
    assert errors.ERROR_CODES[8] is errors.UnknownChannelNameError
    assert errors.ERROR_CODES[10] is errors.ChannelError
    assert errors.ERROR_CODES[25] is errors.SubscriptionBufferOverflowError
    assert errors.ERROR_CODES[12] is errors.ExactlyOneSubscriptionIdRequiredError
    assert set(errors.ERROR_CODES) == set(range(1, 29))


def test_an_unlisted_error_code_keeps_its_number() -> None:
    exc = ErrorMessage(cmd_id=1, code=99, text="new").to_exception()
    assert isinstance(exc, errors.SubscriptionError)
    assert exc.code == 99
    assert exc.terminal is False


# --------------------------------------------------------------------------- lifecycle


def test_market_lifecycle_frame_decodes_with_its_optional_fields() -> None:
    raw = json.dumps(
        {
            "type": "market_lifecycle_v2",
            "sid": 3,
            "seq": 12,
            "msg": {
                "market_ticker": "KXHOURLY-26JUN1114-B1",
                "event_type": "created",
                "open_ts": 1781186400,
                "close_ts": 1781190000,
                "exchange_index": 0,
                "additional_metadata": {
                    "name": "n",
                    "title": "Hourly",
                    "yes_sub_title": "yes",
                    "no_sub_title": "no",
                    "rules_primary": "r1",
                    "rules_secondary": "r2",
                    "can_close_early": True,
                    "event_ticker": "KXHOURLY-26JUN1114",
                    "expected_expiration_ts": 1781190060,
                    "strike_type": "between",
                    "floor_strike": 1.5,
                    "cap_strike": 2.5,
                    "custom_strike": {"k": "v"},
                },
                "price_level_structure": "linear_cent",
                "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}],
            },
        }
    ).encode()
    message = decode_frame(raw)

    assert isinstance(message, MarketLifecycle)
    assert message.market_ticker == "KXHOURLY-26JUN1114-B1"
    assert message.event_type == "created"
    assert (message.open_ts, message.close_ts) == (1781186400, 1781190000)
    assert (message.sid, message.seq) == (3, 12)
    assert message.additional_metadata is not None
    assert message.additional_metadata.event_ticker == "KXHOURLY-26JUN1114"
    assert message.additional_metadata.can_close_early is True
    assert message.price_level_structure == "linear_cent"


@pytest.mark.parametrize(
    ("event_type", "extra"),
    [
        ("determined", {"determination_ts": 1781190000, "result": "yes"}),
        ("settled", {"settled_ts": 1781190060, "result": "no", "settlement_value": "0.0000"}),
        ("deactivated", {"is_deactivated": True}),
        ("close_date_updated", {"close_ts": 1781193600}),
    ],
)
def test_market_lifecycle_event_types_decode(event_type: str, extra: dict[str, object]) -> None:
    msg = {"market_ticker": "M", "event_type": event_type, **extra}
    raw = json.dumps({"type": "market_lifecycle_v2", "sid": 1, "seq": 2, "msg": msg}).encode()
    message = decode_frame(raw)

    assert isinstance(message, MarketLifecycle)
    assert message.event_type == event_type
    for key, value in extra.items():
        assert getattr(message, key) == value


def test_event_lifecycle_frame_decodes() -> None:
    raw = json.dumps(
        {
            "type": "event_lifecycle",
            "sid": 3,
            "seq": 4,
            "msg": {
                "event_ticker": "KXHOURLY-26JUN1114",
                "exchange_index": 0,
                "title": "Hourly 14:00",
                "subtitle": "",
                "collateral_return_type": "MECNET",
                "series_ticker": "KXHOURLY",
                "strike_date": 1781190000,
                "strike_period": "hour",
            },
        }
    ).encode()
    assert decode_frame(raw) == EventLifecycle(
        event_ticker="KXHOURLY-26JUN1114",
        series_ticker="KXHOURLY",
        title="Hourly 14:00",
        subtitle="",
        collateral_return_type="MECNET",
        strike_date=1781190000,
        strike_period="hour",
        exchange_index=0,
        sid=3,
        seq=4,
    )


# --------------------------------------------------------------------------- unknown, invalid


def test_well_formed_frame_of_an_unmodelled_type_is_an_unknown_message() -> None:
    raw = b'{"type":"fill","sid":1,"seq":2,"msg":{"market_ticker":"M"}}\n'
    message = decode_frame(raw)
    assert message == UnknownMessage(type="fill", raw=raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"type":"ticker","msg":{"market_ticker":"X"}',
        b"[1, 2, 3]",
        b'"ticker"',
        b"42",
        b"null",
        b'{"sid":1,"msg":{"market_ticker":"X"}}',
        b'{"type":7,"msg":{}}',
        b'{"type":"ticker","msg":{"market_ticker":5}}',
        b'{"type":"ticker","msg":{"market_ticker":""}}',
        b'{"type":"ticker","msg":"X"}',
        b'{"type":"ticker"}',
        b'{"type":"subscribed","id":1,"msg":{"channel":"ticker","sid":"1"}}',
        b'{"type":"error","id":1,"msg":{"code":"8","msg":"x"}}',
        b'{"type":"ok","id":1,"msg":[{"channel":"ticker"}]}',
        b'{"type":"market_lifecycle_v2","msg":{"market_ticker":"M"}}',
        b'{"type":"event_lifecycle","msg":{"title":"no ticker"}}',
    ],
    ids=[
        "empty",
        "not-json",
        "truncated",
        "array",
        "string",
        "number",
        "null",
        "missing-type",
        "type-not-a-string",
        "ticker-not-a-string",
        "empty-market-ticker",
        "msg-a-string",
        "msg-missing",
        "sid-a-string",
        "code-a-string",
        "subscription-without-sid",
        "lifecycle-without-event-type",
        "event-without-ticker",
    ],
)
def test_undecodable_frames_raise_frame_decode_error_keeping_the_raw_bytes(raw: bytes) -> None:
    with pytest.raises(FrameDecodeError) as caught:
        decode_frame(raw)
    assert caught.value.raw == raw


@pytest.mark.parametrize(
    ("raw", "expected", "note"),
    [
        (
            b'{"type":"ticker","msg":{"market_ticker":"X","price_dollars":0.5}}',
            {"price": Decimal("0.5")},
            "msg.price_dollars=0.5 had the wrong JSON type",
        ),
        (
            b'{"type":"ticker","msg":{"market_ticker":"X","ts_ms":"1717424100000"}}',
            {"exchange_ts_ms": 1717424100000},
            "msg.ts_ms='1717424100000' had the wrong JSON type",
        ),
        (
            b'{"type":"ticker","msg":{"market_ticker":"X","yes_bid":"96"}}',
            {"yes_bid": Decimal("0.96")},
            "msg.yes_bid='96' had the wrong JSON type",
        ),
        (
            b'{"type":"ticker","sid":"six","msg":{"market_ticker":"X","volume_fp":"1.00"}}',
            {"sid": None, "volume": Decimal("1.00")},
            "envelope.sid='six' does not fit its documented type; ignored",
        ),
        (
            b'{"type":"ticker","msg":{"market_ticker":"X","volume_fp":["1"]}}',
            {"volume": None},
            "msg.volume_fp=['1'] does not fit its documented type; ignored",
        ),
    ],
    ids=["price-a-float", "ts_ms-a-string", "legacy-cents-a-string", "sid-a-word", "fp-a-list"],
)
def test_a_value_of_the_wrong_json_type_is_read_or_dropped_keeping_the_rest_of_the_tick(
    raw: bytes, expected: dict[str, object], note: str
) -> None:
    for decode in (decode_frame, decode_tick):
        tick = decode(raw)
        assert isinstance(tick, Tick)
        assert tick.market_ticker == "X"
        for field, value in expected.items():
            assert getattr(tick, field) == value
        assert any(n.startswith(note) for n in tick.notes), tick.notes


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        ({"price_dollars": "NaN"}, "price"),
        ({"price_dollars": "sNaN"}, "price"),
        ({"yes_bid_dollars": "Infinity"}, "yes_bid"),
        ({"yes_ask_dollars": "-Infinity"}, "yes_ask"),
        ({"price_dollars": "-0.0100"}, "price"),
        ({"yes_bid_dollars": "1.0001"}, "yes_bid"),
        ({"yes_ask_dollars": "2"}, "yes_ask"),
        ({"price_dollars": "abc"}, "price"),
        ({"open_interest_fp": "NaN"}, "open_interest"),
        ({"yes_bid_size_fp": "Infinity"}, "yes_bid_size"),
        ({"price": 101}, "price"),
        ({"yes_bid": -1}, "yes_bid"),
        ({"volume_fp": "123456789012345678901234567890.123"}, "volume"),
        ({"volume_fp": "99999999999999999999999999999999.99"}, "volume"),
        ({"ts_ms": -5}, "exchange_ts_ms"),
        ({"time": "yesterday"}, "exchange_ts_ms"),
    ],
    ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()) if isinstance(m, dict) else m,
)
def test_an_impossible_value_is_stored_as_null_and_noted_keeping_the_rest_of_the_tick(
    msg: dict[str, object], field: str
) -> None:
    raw = ticker_frame(yes_ask_size_fp="12.00", **msg)
    for decode in (decode_frame, decode_tick):
        tick = decode(raw)
        assert isinstance(tick, Tick)
        assert getattr(tick, field) is None
        assert tick.yes_ask_size == Decimal("12.00")
        assert len(tick.notes) == 1
        assert "stored as NULL" in tick.notes[0]


@pytest.mark.parametrize(
    ("msg", "field", "stored"),
    [
        ({"yes_bid_size_fp": "-3.00"}, "yes_bid_size", Decimal("-3.00")),
        ({"yes_ask_size_fp": "-24.83"}, "yes_ask_size", Decimal("-24.83")),
        ({"volume_fp": "-1.00"}, "volume", Decimal("-1.00")),
        ({"last_trade_size_fp": "-0.01"}, "last_trade_size", Decimal("-0.01")),
        ({"volume": -5}, "volume", Decimal(-5)),
    ],
    ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()) if isinstance(m, dict) else str(m),
)
def test_a_negative_size_or_count_is_kept_as_received_and_noted(
    msg: dict[str, object], field: str, stored: Decimal
) -> None:
    # real demo captures of determined markets carry negative sizes (Kalshi, October 2026)
    raw = ticker_frame(price_dollars="0.5000", **msg)
    for decode in (decode_frame, decode_tick):
        tick = decode(raw)
        assert isinstance(tick, Tick)
        assert getattr(tick, field) == stored
        assert tick.price == Decimal("0.5000")
        assert tick.notes == (
            f"{next(iter(msg))}={next(iter(msg.values()))!r} is negative; stored as received",
        )


def test_six_decimal_dollars_are_rounded_half_even_to_four_places_and_noted() -> None:
    raw = ticker_frame(
        price_dollars="0.123450", yes_bid_dollars="0.123350", yes_ask_dollars="0.480000"
    )
    tick = decode_tick(raw)
    assert (tick.price, tick.yes_bid, tick.yes_ask) == (
        Decimal("0.1234"),
        Decimal("0.1234"),
        Decimal("0.4800"),
    )
    # trailing zeros lose nothing: only the two values that changed are noted
    assert len(tick.notes) == 2
    assert all("rounded half-even" in n for n in tick.notes)


def test_sending_ts_ms_and_unknown_envelope_keys_are_accepted_on_every_data_frame() -> None:
    tick = decode_tick(
        b'{"type":"ticker","sid":6,"sending_ts_ms":1789966800123,"shard":2,"msg":'
        b'{"market_ticker":"X","price_dollars":"0.0100","ts_ms":1789966800000}}'
    )
    assert (tick.sent_ts_ms, tick.exchange_ts_ms, tick.notes) == (1789966800123, 1789966800000, ())
    lifecycle = decode_frame(
        b'{"type":"market_lifecycle_v2","sid":2,"seq":9,"sending_ts_ms":1789966800200,'
        b'"extra":{"a":1},"msg":{"market_ticker":"M","event_type":"settled","settled_ts":1}}'
    )
    assert isinstance(lifecycle, MarketLifecycle)
    assert (lifecycle.sent_ts_ms, lifecycle.seq) == (1789966800200, 9)
    event = decode_frame(
        b'{"type":"event_lifecycle","sid":2,"seq":10,"sending_ts_ms":1789966800300,"msg":'
        b'{"event_ticker":"E","series_ticker":"S","exchange_index":2}}'
    )
    assert isinstance(event, EventLifecycle)
    assert (event.sent_ts_ms, event.exchange_index) == (1789966800300, 2)


def test_frame_decode_error_keeps_text_input_as_bytes() -> None:
    text = '{"type":"ticker","msg":{"market_ticker":"","price_dollars":"9"}}'
    with pytest.raises(FrameDecodeError) as caught:
        decode_frame(text)
    assert caught.value.raw == text.encode()


def test_ticker_fast_path_refuses_other_frame_types() -> None:
    raw = b'{"type":"subscribed","id":1,"msg":{"channel":"ticker","sid":1}}'
    with pytest.raises(FrameDecodeError) as caught:
        decode_tick(raw)
    assert caught.value.raw == raw


# Regressions found by the fuzz tests: pinned here as plain examples so a failure names the input.


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_frame_raises_frame_decode_error_not_recursion_error(depth: int) -> None:
    raw = (
        b'{"type":"ticker","sid":1,"msg":{"market_ticker":"X","extra":'
        + b"[" * depth
        + b"]" * depth
        + b"}}"
    )
    for decode in (decode_frame, decode_tick):
        with pytest.raises(FrameDecodeError) as caught:
            decode(raw)
        assert caught.value.raw == raw


def test_deeply_nested_unknown_frame_raises_frame_decode_error_not_recursion_error() -> None:
    raw = b'{"type":"zzz","payload":' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    with pytest.raises(FrameDecodeError) as caught:
        decode_frame(raw)
    assert caught.value.raw == raw


# --------------------------------------------------------------------------- REST bodies

MARKET = {
    "ticker": "KXWTACHALLENGERMATCH-26JUN11JIMLEP-LEP",
    "event_ticker": "KXWTACHALLENGERMATCH-26JUN11JIMLEP",
    "status": "active",
    "market_type": "binary",
    "open_time": "2026-06-11T05:39:29Z",
    "close_time": "2026-06-25T16:00:00Z",
    "created_time": "2026-06-11T05:12:22.338653Z",
    "updated_time": "2026-06-11T05:39:31.28563Z",
    "result": "",
    "last_price_dollars": "0.9900",
    "yes_bid_dollars": "0.4700",
    "yes_ask_dollars": "0.5200",
    "yes_bid_size_fp": "3.00",
    "yes_ask_size_fp": "3.00",
    "volume_fp": "2.00",
    "open_interest_fp": "2.00",
}


def test_market_body_decodes_with_exact_decimals() -> None:
    market = decode_market(json.dumps({"market": MARKET}).encode())
    assert market.ticker == MARKET["ticker"]
    assert market.status == "active"
    assert market.last_price == Decimal("0.9900")
    assert market.yes_bid == Decimal("0.4700")
    assert market.yes_ask == Decimal("0.5200")
    assert market.volume == Decimal("2.00")
    assert market.created_time is not None
    assert market.created_time.microsecond == 338653
    assert market.to_tick().yes_ask_size == Decimal("3.00")


def test_markets_page_keeps_the_cursor_and_an_empty_final_cursor() -> None:
    page = decode_markets_page(json.dumps({"markets": [MARKET], "cursor": "abc"}).encode())
    assert [m.ticker for m in page.markets] == [MARKET["ticker"]]
    assert page.cursor == "abc"
    last = decode_markets_page(b'{"markets":[],"cursor":""}')
    assert last.markets == []
    assert last.cursor == ""


def test_events_page_decodes_nested_markets() -> None:
    body = json.dumps(
        {
            "events": [
                {"event_ticker": "E1", "series_ticker": "S", "title": "t", "markets": [MARKET]},
                {"event_ticker": "E2"},
            ],
            "cursor": "",
        }
    ).encode()
    page = decode_events_page(body)
    assert [e.event_ticker for e in page.events] == ["E1", "E2"]
    assert page.events[0].markets is not None
    assert page.events[0].markets[0].yes_bid == Decimal("0.4700")
    assert page.events[1].markets is None


def test_legacy_market_body_decodes_cents_to_dollars() -> None:
    legacy = {"ticker": "L", "last_price": 12, "yes_bid": 11, "yes_ask": 13, "volume": 7}
    market = decode_market(json.dumps({"market": legacy}).encode())
    assert (market.last_price, market.yes_bid, market.yes_ask) == (
        Decimal("0.12"),
        Decimal("0.11"),
        Decimal("0.13"),
    )
    assert market.volume == Decimal(7)


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (decode_markets_page, b'{"markets":[],"cursor":"a\xffb"}'),
        (decode_market, b'{"market":{"ticker":"\xff"}}'),
    ],
    ids=["markets-page", "market"],
)
def test_rest_body_with_invalid_utf8_in_a_string_raises_frame_decode_error(
    decode: object, body: bytes
) -> None:
    with pytest.raises(FrameDecodeError) as caught:
        decode(body)  # type: ignore[operator]
    assert caught.value.raw == body


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (decode_market, b'{"market":{"ticker":5}}'),
        (decode_market, b'{"market":{"ticker":""}}'),
        (decode_market, b'{"market":"T"}'),
        (decode_market, b'{"error":{"code":"not_found","message":"not found"}}'),
        (decode_markets_page, b"<html>502 Bad Gateway</html>"),
        (decode_markets_page, b'{"markets":{"ticker":"T"},"cursor":""}'),
        (decode_markets_page, b'{"markets":[],"cursor":7}'),
        (decode_events_page, b'{"cursor":""}'),
    ],
    ids=[
        "ticker-a-number",
        "empty-ticker",
        "market-a-string",
        "error-body",
        "html",
        "markets-not-a-list",
        "cursor-a-number",
        "no-events",
    ],
)
def test_rest_bodies_that_do_not_decode_raise_frame_decode_error(
    decode: object, body: bytes
) -> None:
    with pytest.raises(FrameDecodeError) as caught:
        decode(body)  # type: ignore[operator]
    assert caught.value.raw == body


# Real data breaks the spec (negative sizes on determined markets, up to 6 decimals); one
# odd market must never cost the rest of its page.

CURRENT_MARKET = {
    **MARKET,
    "settlement_bounds_type": "default",
    "exchange_index": 0,
    "price_level_structure": "linear_cent",
}


@pytest.mark.parametrize(
    ("odd", "check"),
    [
        (
            {"yes_bid_size_fp": "-3.00", "yes_ask_size_fp": "-24.83"},
            {"yes_bid_size": Decimal("-3.00"), "yes_ask_size": Decimal("-24.83")},
        ),
        ({"yes_bid_dollars": "1.5"}, {"yes_bid": None}),
        ({"last_price_dollars": "NaN"}, {"last_price": None}),
        ({"created_time": "yesterday"}, {"created_time": None}),
        ({"volume_fp": "123456789012345678901234567890.123"}, {"volume": None}),
        ({"yes_ask_dollars": "0.520049"}, {"yes_ask": Decimal("0.5200")}),
        ({"status": "paused_for_review"}, {"status": "paused_for_review"}),
        ({"settlement_bounds_type": "ceiling"}, {"settlement_bounds_type": "ceiling"}),
        ({"exchange_index": "2"}, {"exchange_index": 2}),
    ],
    ids=[
        "negative-sizes",
        "price-above-one",
        "nan-price",
        "bad-time",
        "count-beyond-decimal-precision",
        "six-decimals",
        "unknown-status",
        "unknown-bounds-type",
        "index-a-string",
    ],
)
def test_a_page_with_one_odd_market_keeps_every_market_and_notes_the_odd_one(
    odd: dict[str, object], check: dict[str, object]
) -> None:
    others = [{**CURRENT_MARKET, "ticker": f"KX-OK-{i}"} for i in range(3)]
    body = json.dumps(
        {
            "markets": [others[0], {**CURRENT_MARKET, "ticker": "KX-ODD", **odd}, *others[1:]],
            "cursor": "next",
        }
    ).encode()
    page = decode_markets_page(body)
    assert [m.ticker for m in page.markets] == ["KX-OK-0", "KX-ODD", "KX-OK-1", "KX-OK-2"]
    assert page.cursor == "next"
    assert page.skipped == ()
    odd_market = page.markets[1]
    for field, value in check.items():
        assert getattr(odd_market, field) == value
    assert odd_market.notes, "the odd market says what was done"
    assert all(m.notes == () for m in page.markets if m is not odd_market)
    assert all(m.yes_bid == Decimal("0.4700") for m in page.markets if m is not odd_market)


def test_objects_that_cannot_be_read_are_skipped_with_a_reason_and_the_rest_kept() -> None:
    body = (
        b'{"markets":[{"ticker":"A"},{"title":"no ticker"},7,{"ticker":"B\xff"},'
        b'{"ticker":"C"}],"cursor":""}'
    )
    page = decode_markets_page(body)
    assert [m.ticker for m in page.markets] == ["A", "C"]
    assert len(page.skipped) == 3
    assert page.skipped[0].startswith("markets[1] skipped")
    assert "ticker" in page.skipped[0]
    assert page.skipped[1].startswith("markets[2] skipped")


def test_events_page_skips_an_unreadable_event_and_keeps_the_others() -> None:
    body = json.dumps(
        {
            "events": [
                {"title": "no ticker"},
                {
                    "event_ticker": "E2",
                    "series_ticker": "S",
                    "exchange_index": 2,
                    "markets": [MARKET, {"no": "ticker"}],
                },
            ],
            "cursor": "",
        }
    ).encode()
    page = decode_events_page(body)
    assert [e.event_ticker for e in page.events] == ["E2"]
    assert page.events[0].exchange_index == 2
    assert page.events[0].markets is not None and len(page.events[0].markets) == 1
    assert [s.split(" ")[0] for s in page.skipped] == ["events[0]", "events[1].markets[1]"]


def test_market_of_today_keeps_settlement_bounds_floor_and_exchange_index() -> None:
    floor = {
        **CURRENT_MARKET,
        "settlement_bounds_type": "floor",
        "settlement_floor_dollars": "0.0500",
        "exchange_index": 2,
        "status": "determined",
        "result": "yes",
        "settlement_value_dollars": "1.0000",
    }
    market = decode_market(json.dumps({"market": floor}).encode())
    assert market.settlement_bounds_type == "floor"
    assert market.settlement_floor == Decimal("0.0500")
    assert market.settlement_value == Decimal("1.0000")
    assert market.exchange_index == 2
    assert market.notes == ()


def test_exchange_status_keeps_each_shard() -> None:
    body = json.dumps(
        {
            "exchange_active": True,
            "trading_active": True,
            "exchange_index_statuses": [
                {
                    "exchange_index": 0,
                    "description": "main",
                    "exchange_active": True,
                    "trading_active": True,
                },
                {
                    "exchange_index": 2,
                    "description": "crypto and commodities",
                    "exchange_active": True,
                    "trading_active": False,
                    "new_key": 1,
                },
            ],
        }
    ).encode()
    status = decode_exchange_status(body)
    assert status.exchange_index_statuses is not None
    assert [(s.exchange_index, s.trading_active) for s in status.exchange_index_statuses] == [
        (0, True),
        (2, False),
    ]
    assert (
        decode_exchange_status(
            b'{"exchange_active":true,"trading_active":true}'
        ).exchange_index_statuses
        is None
    )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"subscribed","id":1,"sending_ts_ms":1,"new":[1],"msg":{"channel":"ticker",'
        b'"sid":1,"shard":2}}',
        b'{"type":"ok","id":2,"sid":1,"seq":3,"sending_ts_ms":1,"new":{},"msg":'
        b'{"market_tickers":["A"]}}',
        b'{"type":"unsubscribed","id":3,"sid":1,"seq":4,"sending_ts_ms":1,"new":null}',
        b'{"type":"error","id":4,"sending_ts_ms":1,"new":"x","msg":{"code":8,"msg":"no"}}',
    ],
    ids=["subscribed", "ok", "unsubscribed", "error"],
)
def test_unknown_envelope_keys_are_accepted_on_command_answers(raw: bytes) -> None:
    message = decode_frame(raw)
    assert isinstance(message, Subscribed | Ok | Unsubscribed | ErrorMessage)
    assert message.cmd_id is not None

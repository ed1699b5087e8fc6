"""Error bodies become typed exceptions users can act on."""

from __future__ import annotations

import pytest

from kalshi_pipeline.kalshi.errors import (
    KalshiAPIError,
    KalshiAuthError,
    KalshiBadRequestError,
    KalshiNotFoundError,
    KalshiRateLimitError,
    KalshiServerError,
    parse_error_body,
)
from kalshi_pipeline.kalshi.ratelimit import TokenBucket
from kalshi_pipeline.kalshi.rest import api_error

URL = "http://127.0.0.1:8700/trade-api/v2/portfolio/balance"
LIMIT_BODY = (
    b'{"msg":"Parameter validation failed for GetMarkets: Key: \'GetMarketsParams.Limit\' '
    b"Error:Field validation for 'Limit' failed on the 'lte' tag\"}"
)

# --------------------------------------------------------------------------- parse_error_body


def test_nested_error_body_is_parsed() -> None:
    body = (
        b'{"error":{"code":"authentication_error","message":"authentication_error",'
        b'"details":"INCORRECT_API_KEY_SIGNATURE"}}'
    )
    assert parse_error_body(body) == (
        "authentication_error",
        "authentication_error",
        "INCORRECT_API_KEY_SIGNATURE",
    )


def test_nested_error_body_without_details_is_parsed() -> None:
    body = b'{"error":{"code":"not_found","message":"not found","service":"exchange"}}'
    assert parse_error_body(body) == ("not_found", "not found", None)


def test_flat_error_body_is_parsed() -> None:
    body = (
        b'{"code":"bad_request","message":"bad request","details":"json: cannot unmarshal '
        b'number into Go struct field CreateOrderV2Request.count of type string"}'
    )
    code, message, details = parse_error_body(body)
    assert (code, message) == ("bad_request", "bad request")
    assert details is not None
    assert details.startswith("json: cannot unmarshal number")


def test_bare_msg_body_is_parsed() -> None:
    code, message, details = parse_error_body(LIMIT_BODY)
    assert code is None
    assert details is None
    assert message is not None
    assert message.startswith("Parameter validation failed for GetMarkets")


def test_rate_limit_body_is_parsed() -> None:
    assert parse_error_body(b'{"error": "too many requests"}') == (
        None,
        "too many requests",
        None,
    )


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>bad gateway</html>", b"[1,2]", b'"text"', b"{}", b'{"other":1}', b"\xff\xfe"],
)
def test_unparseable_error_bodies_give_nothing(body: bytes) -> None:
    assert parse_error_body(body) == (None, None, None)


# --------------------------------------------------------------------------- api_error


@pytest.mark.parametrize(
    ("status", "body", "cls", "reason"),
    [
        (
            401,
            b'{"error":{"code":"authentication_error","message":"authentication_error",'
            b'"details":"INCORRECT_API_KEY_SIGNATURE"}}',
            KalshiAuthError,
            "bad_signature",
        ),
        (
            401,
            b'{"error":{"code":"authentication_error","message":"authentication_error",'
            b'"details":"NOT_FOUND"}}',
            KalshiAuthError,
            "unknown_key",
        ),
        (
            401,
            b'{"error":{"code":"signature_is_missing_from_headers",'
            b'"message":"signature is missing from headers"}}',
            KalshiAuthError,
            "missing_signature",
        ),
        (
            401,
            b'{"error":{"code":"header_timestamp_expired","message":"header timestamp expired"}}',
            KalshiAuthError,
            "clock_skew",
        ),
        (403, b'{"error":{"code":"forbidden","message":"forbidden"}}', KalshiAuthError, "unknown"),
    ],
)
def test_auth_answers_become_auth_errors_with_the_cause(
    status: int, body: bytes, cls: type[KalshiAPIError], reason: str
) -> None:
    exc = api_error("GET", URL, status, body)
    assert type(exc) is cls
    assert isinstance(exc, KalshiAuthError)
    assert exc.reason == reason
    assert exc.status == status
    assert exc.body == body
    assert exc.url == URL
    assert KalshiAuthError.HINTS[reason] in str(exc)
    assert f"HTTP {status}" in str(exc)


def test_bad_signature_error_carries_kalshis_code_and_details() -> None:
    body = (
        b'{"error":{"code":"authentication_error","message":"authentication_error",'
        b'"details":"INCORRECT_API_KEY_SIGNATURE"}}'
    )
    exc = api_error("GET", URL, 401, body)
    assert exc.code == "authentication_error"
    assert exc.details == "INCORRECT_API_KEY_SIGNATURE"
    assert "authentication_error" in str(exc)
    assert "INCORRECT_API_KEY_SIGNATURE" in str(exc)
    assert URL in str(exc)


@pytest.mark.parametrize(
    ("status", "body", "cls", "words"),
    [
        (400, LIMIT_BODY, KalshiBadRequestError, ["Parameter validation failed", "lte"]),
        (
            400,
            b'{"code":"bad_request","message":"bad request","details":"json: cannot unmarshal"}',
            KalshiBadRequestError,
            ["bad_request", "json: cannot unmarshal"],
        ),
        (409, b'{"error":{"code":"conflict","message":"c"}}', KalshiBadRequestError, ["conflict"]),
        (
            404,
            b'{"error":{"code":"not_found","message":"not found","service":"exchange"}}',
            KalshiNotFoundError,
            ["not_found", "not found"],
        ),
        (429, b'{"error": "too many requests"}', KalshiRateLimitError, ["too many requests"]),
        (
            500,
            b'{"error":{"code":"internal_server_error","message":"internal","details":"boom"}}',
            KalshiServerError,
            ["internal_server_error", "boom"],
        ),
        (502, b"<html>Bad Gateway</html>", KalshiServerError, ["HTTP 502"]),
        (
            503,
            b'{"error":{"code":"service_unavailable","message":"unavailable"}}',
            KalshiServerError,
            ["service_unavailable"],
        ),
    ],
)
def test_http_status_maps_to_the_right_error_class_with_kalshis_words(
    status: int, body: bytes, cls: type[KalshiAPIError], words: list[str]
) -> None:
    exc = api_error("GET", URL, status, body)
    assert type(exc) is cls
    assert exc.status == status
    assert exc.body == body
    for word in words:
        assert word in str(exc)


def test_error_code_is_kept_on_the_exception() -> None:
    exc = api_error("GET", URL, 500, b'{"code":"internal","message":"m","details":"d"}')
    assert (exc.code, exc.details) == ("internal", "d")


# --------------------------------------------------------------------------- TokenBucket


def test_token_bucket_refuses_when_empty() -> None:
    bucket = TokenBucket(rate=0.001, capacity=2)  # refills one token in ~17 minutes
    assert bucket.try_acquire()
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
    assert not bucket.try_acquire(0.5)


def test_token_bucket_refuses_a_cost_above_what_it_holds() -> None:
    bucket = TokenBucket(rate=0.001, capacity=10)
    assert not bucket.try_acquire(11)
    assert bucket.try_acquire(10)


def test_token_bucket_reserve_in_debt_returns_a_positive_wait() -> None:
    bucket = TokenBucket(rate=1.0, capacity=1)
    assert bucket.reserve() == 0.0
    wait = bucket.reserve()
    assert wait > 0
    assert bucket.reserve() > wait  # deeper in debt, longer wait
    assert not bucket.try_acquire()


def test_token_bucket_refuses_a_non_positive_rate() -> None:
    for rate in (0, -1):
        with pytest.raises(ValueError, match="rate"):
            TokenBucket(rate)

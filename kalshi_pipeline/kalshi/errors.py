"""Typed errors of the protocol layer, each with a message a user can act on."""

from __future__ import annotations

import json
from typing import Any, ClassVar


class KalshiError(Exception):
    """Base of every error this package raises on purpose."""


class KalshiConfigError(KalshiError):
    """Settings or key files are missing or wrong; the message names the input and the fix."""


# --------------------------------------------------------------------------- REST


class KalshiAPIError(KalshiError):
    """A non-2xx answer from the REST API, with Kalshi's code and details when the body had them."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        details: str | None = None,
        body: bytes | str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details
        self.body = body
        self.url = url


class KalshiAuthError(KalshiAPIError):
    """401/403: the request was not accepted as signed by a known key.

    `reason` tells which of the known causes it was: `bad_signature`, `unknown_key`,
    `missing_signature`, `clock_skew`, or `unknown`.
    """

    HINTS: ClassVar[dict[str, str]] = {
        "bad_signature": (
            "the signature did not verify (INCORRECT_API_KEY_SIGNATURE): check that "
            "KALSHI_PRIVATE_KEY_PATH holds the private key that belongs to KALSHI_API_KEY_ID, "
            "and that the signed path has no query string"
        ),
        "unknown_key": (
            "the key id is not known to this environment (NOT_FOUND): check KALSHI_API_KEY_ID "
            "and that the key was made for this environment (demo keys only work on demo)"
        ),
        "missing_signature": "the request carried no KALSHI-ACCESS-SIGNATURE header",
        "clock_skew": (
            "the timestamp was outside the server's window (header_timestamp_expired): "
            "synchronise this machine's clock (NTP)"
        ),
        "unknown": "the credentials were refused",
    }

    def __init__(self, message: str, *, reason: str = "unknown", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason = reason


class KalshiRateLimitError(KalshiAPIError):
    """429 after the retry budget was spent."""


class KalshiNotFoundError(KalshiAPIError):
    """404: the market, event or path does not exist."""


class KalshiBadRequestError(KalshiAPIError):
    """400 and other 4xx: the request's parameters were refused."""


class KalshiServerError(KalshiAPIError):
    """5xx after the retry budget was spent."""


class KalshiConnectionError(KalshiError):
    """The server could not be reached, or did not answer in time."""


def auth_hint(reason: str, key_id: str | None = None, key_file: object | None = None) -> str:
    """What to check after a refusal, naming the key id and key file that signed when known."""
    if reason == "bad_signature" and key_id:
        where = f"{key_file}" if key_file else "KALSHI_PRIVATE_KEY_PATH"
        return (
            f"the signature did not verify (INCORRECT_API_KEY_SIGNATURE): the key in {where} is "
            f"not the one registered for key id {key_id}; set KALSHI_PRIVATE_KEY_PATH to the "
            "private key file made with that key id (an Ed25519 key and an RSA key are never "
            "interchangeable), and sign the path with no query string"
        )
    if reason == "unknown_key" and key_id:
        used = f" (signing with {key_file})" if key_file else ""
        return (
            f"key id {key_id} is not known to this environment (NOT_FOUND){used}: set "
            "KALSHI_API_KEY_ID to the id Kalshi shows beside this key, and check that the key "
            "was made for this environment (demo keys only work on demo)"
        )
    return KalshiAuthError.HINTS.get(reason, KalshiAuthError.HINTS["unknown"])


# error bodies: nested, flat, bare, and the 429 one


def auth_reason(code: str | None, details: str | None) -> str:
    text = f"{code or ''} {details or ''}".upper()
    if "INCORRECT_API_KEY_SIGNATURE" in text:
        return "bad_signature"
    if "NOT_FOUND" in text:
        return "unknown_key"
    if "SIGNATURE_IS_MISSING" in text:
        return "missing_signature"
    if "TIMESTAMP_EXPIRED" in text:
        return "clock_skew"
    return "unknown"


def parse_error_body(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(code, message, details) from any of Kalshi's error-body shapes; Nones when unparseable."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    err = data.get("error")
    if isinstance(err, dict):  # nested {"error": {"code", "message", "details"}}
        data = err
    elif isinstance(err, str):  # 429: {"error": "too many requests"}
        return None, err, None
    if "code" in data or "message" in data:  # flat {"code", "message", "details"}
        return (
            _str_or_none(data.get("code")),
            _str_or_none(data.get("message")),
            _str_or_none(data.get("details")),
        )
    if "msg" in data:  # bare {"msg": "..."}
        return None, _str_or_none(data.get("msg")), None
    return None, None, None


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


# --------------------------------------------------------------------------- WebSocket


class KalshiWebSocketError(KalshiError):
    """Base of WebSocket-side errors."""


class WebSocketAuthError(KalshiWebSocketError):
    """The handshake was answered 401; `body` is the server's body and `reason` as for REST."""

    def __init__(self, message: str, *, status: int, body: bytes, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.reason = reason


class WebSocketHandshakeError(KalshiWebSocketError):
    """The handshake failed for a reason other than credentials (refused, 5xx, network)."""

    def __init__(self, message: str, *, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class RetiredChannelError(KalshiWebSocketError, ValueError):
    """A channel Kalshi removed was asked for; raised before anything is sent."""


class SilenceTimeoutError(KalshiWebSocketError):
    """Nothing (no frame, no pong) arrived for longer than the silence limit."""


class ConnectionClosedError(KalshiWebSocketError):
    """The socket closed, cleanly or not; a clean close is a disconnect like any other."""

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class SubscriptionError(KalshiWebSocketError):
    """An `error` frame from the server. Subclasses name each of Kalshi's documented codes."""

    code: ClassVar[int] = 0
    name: ClassVar[str] = "Unknown error"
    terminal: ClassVar[bool] = False  # the subscription is gone: resubscribe

    def __init__(
        self,
        server_msg: str = "",
        *,
        cmd_id: int | None = None,
        sid: int | None = None,
        raw: bytes = b"",
    ) -> None:
        self.server_msg = server_msg
        self.cmd_id = cmd_id
        self.sid = sid
        self.raw = raw
        where = f" (command id {cmd_id})" if cmd_id else ""
        where += f" (sid {sid})" if sid else ""
        super().__init__(f"Kalshi WebSocket error {self.code} {self.name}: {server_msg}{where}")


def _err(code: int, name: str, terminal: bool = False) -> type[SubscriptionError]:
    cls_name = "".join(w.capitalize() for w in name.replace("_", " ").split())
    cls_name += "" if cls_name.endswith("Error") else "Error"
    return type(cls_name, (SubscriptionError,), {"code": code, "name": name, "terminal": terminal})


UnableToProcessMessageError = _err(1, "Unable to process message")
ParamsRequiredError = _err(2, "Params required")
ChannelsRequiredError = _err(3, "Channels required")
SubscriptionIdsRequiredError = _err(4, "Subscription IDs required")
UnknownCommandError = _err(5, "Unknown command")
AlreadySubscribedError = _err(6, "Already subscribed")
UnknownSubscriptionIdError = _err(7, "Unknown subscription ID")
UnknownChannelNameError = _err(8, "Unknown channel name")
AuthenticationRequiredError = _err(9, "Authentication required")
ChannelError = _err(10, "Channel error", terminal=True)
InvalidParameterError = _err(11, "Invalid parameter")
ExactlyOneSubscriptionIdRequiredError = _err(12, "Exactly one subscription ID is required")
UnsupportedActionError = _err(13, "Unsupported action")
MarketTickerRequiredError = _err(14, "Market Ticker required")
ActionRequiredError = _err(15, "Action required")
MarketNotFoundError = _err(16, "Market not found")
InternalServerError = _err(17, "Internal error")
CommandTimeoutError = _err(18, "Command timeout")
ShardFactorRequiredError = _err(19, "Shard factor validation")
ShardFactorInvalidError = _err(20, "Shard factor invalid")
ShardKeyRequiredError = _err(21, "Shard key validation")
ShardKeyInvalidError = _err(22, "Shard key invalid")
MatchIdsRequiredError = _err(23, "Match IDs required")
IndexIdsRequiredError = _err(24, "Index IDs required")
SubscriptionBufferOverflowError = _err(25, "Subscription buffer overflow", terminal=True)
SubscriptionMarketLimitExceededError = _err(26, "Subscription market limit exceeded")
TooManyRequestsError = _err(27, "Too many requests")
UnderlyingTickersRequiredError = _err(28, "Underlying tickers required")

ERROR_CODES: dict[int, type[SubscriptionError]] = {
    cls.code: cls
    for cls in (
        UnableToProcessMessageError,
        ParamsRequiredError,
        ChannelsRequiredError,
        SubscriptionIdsRequiredError,
        UnknownCommandError,
        AlreadySubscribedError,
        UnknownSubscriptionIdError,
        UnknownChannelNameError,
        AuthenticationRequiredError,
        ChannelError,
        InvalidParameterError,
        ExactlyOneSubscriptionIdRequiredError,
        UnsupportedActionError,
        MarketTickerRequiredError,
        ActionRequiredError,
        MarketNotFoundError,
        InternalServerError,
        CommandTimeoutError,
        ShardFactorRequiredError,
        ShardFactorInvalidError,
        ShardKeyRequiredError,
        ShardKeyInvalidError,
        MatchIdsRequiredError,
        IndexIdsRequiredError,
        SubscriptionBufferOverflowError,
        SubscriptionMarketLimitExceededError,
        TooManyRequestsError,
        UnderlyingTickersRequiredError,
    )
}


def subscription_error(code: int, server_msg: str = "", **kwargs: Any) -> SubscriptionError:
    """The named error for a server error code; unknown codes keep their number."""
    cls = ERROR_CODES.get(code)
    if cls is None:
        cls = type("UnknownCodeError", (SubscriptionError,), {"code": code, "name": "Unknown code"})
    return cls(server_msg, **kwargs)


# --------------------------------------------------------------------------- frames


class FrameDecodeError(KalshiError):
    """A frame or body that does not decode into a known message; `raw` is kept for the log."""

    def __init__(self, reason: str, raw: bytes | str) -> None:
        self.reason = reason
        self.raw = raw if isinstance(raw, bytes) else raw.encode("utf-8", "replace")
        preview = self.raw[:200].decode("utf-8", "replace")
        super().__init__(f"undecodable frame ({reason}): {preview!r}")

"""WebSocket command parsing and the error codes of kalshi-protocol.md §3.4.

Where the protocol leaves the choice open: malformed JSON and wrong types of the envelope fields
(`id`, `cmd`, `params`, `channels`) are code 1; malformed values inside `params` (market tickers
or ids, sids, flags) are code 11.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

ERROR_TEXT: dict[int, str] = {
    1: "Unable to process message",
    2: "Params required",
    3: "Channels required",
    4: "Subscription IDs required",
    5: "Unknown command",
    6: "Already subscribed",
    7: "Unknown subscription ID",
    8: "Unknown channel name",
    9: "Authentication required",
    10: "Channel error",
    11: "Invalid parameter",
    12: "Exactly one subscription ID is required",
    13: "Unsupported action",
    14: "Market Ticker required",
    15: "Action required",
    16: "Market not found",
    17: "Internal error",
    18: "Command timeout",
    25: "Subscription buffer overflow",
    26: "Subscription market limit exceeded",
    27: "Too many requests",
}

COMMANDS = ("subscribe", "unsubscribe", "update_subscription", "list_subscriptions")
ACTIONS = ("add_markets", "delete_markets", "get_snapshot")
PRIVATE_CHANNELS = frozenset(
    {"fill", "user_orders", "market_positions", "order_group_updates", "communications"}
)
"""The simulator grants no private permissions: these answer code 9."""
NOT_SIMULATED_CHANNELS = frozenset({"cfbenchmarks_value", "cfbenchmarks_value_5hz", "pyth_value"})


class CommandError(Exception):
    def __init__(self, code: int, sid: int | None = None, command_id: int = 0) -> None:
        super().__init__(ERROR_TEXT[code])
        self.code = code
        self.sid = sid
        self.command_id = command_id


@dataclass
class Command:
    id: int
    cmd: str
    params: dict[str, Any] | None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_command(text: str | bytes) -> Command:
    """Decode one client frame; raises CommandError(1 or 5) with the id when one was readable."""
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise CommandError(1) from None
    if not isinstance(body, dict):
        raise CommandError(1)
    cid = body.get("id", 0)
    if cid is None:
        cid = 0
    if not _is_int(cid):
        raise CommandError(1)
    cmd = body.get("cmd")
    params = body.get("params")
    if cmd is not None and not isinstance(cmd, str):
        raise CommandError(1, command_id=cid)
    if params is not None and not isinstance(params, dict):
        raise CommandError(1, command_id=cid)
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        raise CommandError(5, command_id=cid)
    return Command(cid, cmd, params)


def channels_of(params: dict[str, Any]) -> list[str]:
    channels = params.get("channels")
    if channels is None or channels == []:
        raise CommandError(3)
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise CommandError(1)
    return channels


@dataclass
class MarketSelection:
    """Markets named in params: tickers and/or ids; `named` is False for 'all markets'."""

    tickers: list[str]
    ids: list[str]

    @property
    def named(self) -> bool:
        return bool(self.tickers or self.ids)

    def __len__(self) -> int:
        return len(self.tickers) + len(self.ids)


def _str_list(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CommandError(11)
    return list(dict.fromkeys(value))


def _market_id(value: str) -> str:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise CommandError(11) from None
    if len(value) != 36:
        raise CommandError(11)
    return str(parsed)


def market_selection(params: dict[str, Any]) -> MarketSelection:
    if "market_ticker" in params and "market_tickers" in params:
        raise CommandError(11)
    if "market_id" in params and "market_ids" in params:
        raise CommandError(11)
    tickers: list[str] = []
    ids: list[str] = []
    if "market_ticker" in params:
        one = params["market_ticker"]
        if not isinstance(one, str) or not one:
            raise CommandError(11)
        tickers = [one]
    elif "market_tickers" in params:
        tickers = _str_list(params["market_tickers"])
    if "market_id" in params:
        one = params["market_id"]
        if not isinstance(one, str):
            raise CommandError(11)
        ids = [_market_id(one)]
    elif "market_ids" in params:
        ids = list(dict.fromkeys(_market_id(v) for v in _str_list(params["market_ids"])))
    return MarketSelection(tickers, ids)


def flag(params: dict[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise CommandError(11)
    return value


def sids_of(params: dict[str, Any]) -> list[int]:
    sids = params.get("sids")
    if sids is None or sids == []:
        raise CommandError(4)
    if not isinstance(sids, list) or not all(_is_int(s) for s in sids):
        raise CommandError(11)
    return list(dict.fromkeys(sids))


def single_sid(params: dict[str, Any]) -> int:
    """`update_subscription` names exactly one subscription, as `sid` or `sids: [n]`."""
    has_sid = params.get("sid") is not None
    has_sids = params.get("sids") is not None
    if has_sid == has_sids:
        raise CommandError(12)
    if has_sid:
        sid = params["sid"]
        if not _is_int(sid):
            raise CommandError(11)
        return int(sid)
    sids = params["sids"]
    if not isinstance(sids, list) or len(sids) != 1:
        raise CommandError(12)
    if not _is_int(sids[0]):
        raise CommandError(11)
    return int(sids[0])


def action_of(params: dict[str, Any]) -> str:
    action = params.get("action")
    if action is None or action == "":
        raise CommandError(15)
    if not isinstance(action, str) or action not in ACTIONS:
        raise CommandError(13)
    return action

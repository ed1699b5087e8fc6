"""Wire formats shared by REST and WebSocket: dollar and count strings, RFC3339 times, JSON.

Prices live as integer cents and counts as integer hundredths of a contract everywhere in the
simulator, so every string is derived from exact integers (kalshi-protocol.md §3.6, §4.2).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

DOLLARS: tuple[str, ...] = tuple("1.0000" if c == 100 else f"0.{c:02d}00" for c in range(101))
"""`DOLLARS[c]` is the 4-dp dollar string of c cents, for 0 <= c <= 100."""

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def count_fp(centi: int) -> str:
    """A count held in hundredths of a contract as Kalshi's 2-dp `*_fp` string."""
    whole, frac = divmod(centi, 100)
    return f"{whole}.{frac:02d}"


def strike_text(value: float) -> str:
    """A strike as it appears in a ticker: `45`, `3.5`."""
    return f"{value:g}"


class _SecondCache:
    """Formatting the date part of a timestamp is the slow bit; ticks share the same second."""

    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def get(self, second: int) -> str:
        if second != self.second:
            self.second = second
            self.prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return self.prefix


_seconds = _SecondCache()


def rfc3339(us: int) -> str:
    """Epoch microseconds as Go's RFC3339Nano does it: fraction present only when non-zero,
    trailing zeros trimmed (`2026-07-19T15:45:00.544125Z`, `2026-09-21T05:00:00Z`)."""
    second, frac = divmod(us, 1_000_000)
    prefix = _seconds.get(second)
    if frac == 0:
        return prefix + "Z"
    return f"{prefix}.{frac:06d}".rstrip("0") + "Z"


def ticker_date(us: int) -> str:
    """`26NOV24` for 2026-11-24, as Kalshi's event tickers spell dates."""
    d = datetime.fromtimestamp(us / 1_000_000, UTC)
    return f"{d.year % 100:02d}{_MONTHS[d.month - 1]}{d.day:02d}"


def clock_suffix(us: int, with_seconds: bool) -> str:
    """`H1500` (or `H150020` when events are shorter than a minute apart)."""
    d = datetime.fromtimestamp(us / 1_000_000, UTC)
    return f"H{d.hour:02d}{d.minute:02d}" + (f"{d.second:02d}" if with_seconds else "")


def dumps(obj: Any) -> bytes:
    """Compact JSON, as Kalshi's gateway writes it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

"""Shared test helpers: waiting on conditions, reading the ledger and the warehouse."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from kalshi_pipeline.warehouse import Warehouse

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], *, timeout: float, interval: float = 0.2, what: str = "condition"
) -> T:
    """Poll until `condition()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def read_ledger(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a line being written right now
    return out


def query(db: Path, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    with Warehouse(db).connect(read_only=True, timeout_s=60) as con:
        return con.execute(sql, list(params)).fetchall()


def _d(value: str | None) -> Decimal | None:
    return None if value in (None, "") else Decimal(value)


def ledger_key(line: dict[str, Any]) -> tuple[Any, ...]:
    """What a stored websocket tick must reproduce of a ledger line."""
    return (
        line["market_ticker"],
        line.get("ts_ms"),
        _d(line.get("price_dollars")),
        _d(line.get("yes_bid_dollars")),
        _d(line.get("yes_ask_dollars")),
        _d(line.get("yes_bid_size_fp")),
        _d(line.get("yes_ask_size_fp")),
        _d(line.get("volume_fp")),
        _d(line.get("open_interest_fp")),
    )


TICK_KEY_SQL = (
    "SELECT market_ticker, epoch_ms(exchange_ts), price, yes_bid, yes_ask, yes_bid_size, "
    "yes_ask_size, volume, open_interest FROM ticks WHERE source = 'websocket'"
)


def stored_ws_keys(db: Path) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(r) for r in query(db, TICK_KEY_SQL))


def sent_indices(sessions: list[dict[str, Any]]) -> set[int]:
    """Ledger line numbers the simulator sent on any connection."""
    out: set[int] = set()
    for s in sessions:
        for first, last in s.get("sent_ranges", []):
            out.update(range(first, last + 1))
    return out


def feed_events(db: Path) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    return query(
        db, "SELECT occurred_at, source, kind, detail FROM feed_events ORDER BY occurred_at"
    )

"""The predecessor's write path, replayed on our frames: one SQLite connect, insert, commit and
close per message (predecessor/review.md §1.2 and S8; `kalshi_websocket_watchdog.py` L345-399).

`python -m kalshi_pipeline.bench.seed_pattern FRAMES SQLITE [--max-frames N] [--max-s S]` reads
length-prefixed ticker frames (as the loopback client captured them), and for each one parses the
JSON, opens the SQLite file, inserts one row into `websocket_market_data` with the predecessor's
columns (prices in cents, New York local-time text timestamp, exchange seconds), commits and
closes. It prints one JSON line with the messages written and the rate.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from kalshi_pipeline.bench.loopback import read_frames

SCHEMA = """
CREATE TABLE IF NOT EXISTS websocket_market_data (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT,
    market_ticker TEXT,
    price INTEGER,
    yes_bid INTEGER,
    yes_ask INTEGER,
    volume_delta INTEGER,
    open_interest_delta INTEGER,
    dollar_volume_delta INTEGER,
    dollar_open_interest_delta INTEGER,
    ts INTEGER
)
"""
INSERT = (
    "INSERT INTO websocket_market_data (timestamp, market_ticker, price, yes_bid, yes_ask, "
    "volume_delta, open_interest_delta, dollar_volume_delta, dollar_open_interest_delta, ts) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
NEW_YORK = ZoneInfo("America/New_York")


def cents(msg: dict[str, Any], name: str) -> int | None:
    dollars = msg.get(f"{name}_dollars")
    if dollars is not None:
        return round(float(dollars) * 100)
    value = msg.get(name)
    return int(value) if value is not None else None


def store_one(path: str, frame: bytes) -> None:
    """What the predecessor did for every message."""
    msg = json.loads(frame).get("msg", {})
    ts_ms = msg.get("ts_ms")
    conn = sqlite3.connect(path)
    cursor = conn.cursor()
    cursor.execute(
        INSERT,
        (
            datetime.now(NEW_YORK).isoformat(),
            msg.get("market_ticker"),
            cents(msg, "price"),
            cents(msg, "yes_bid"),
            cents(msg, "yes_ask"),
            msg.get("volume_delta"),
            msg.get("open_interest_delta"),
            msg.get("dollar_volume_delta"),
            msg.get("dollar_open_interest_delta"),
            ts_ms // 1000 if ts_ms is not None else msg.get("ts"),
        ),
    )
    conn.commit()
    conn.close()


def replay(frames: list[bytes], path: Path, max_frames: int, max_s: float) -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        conn.execute(SCHEMA)
    target = str(path)
    n = 0
    start = time.perf_counter()
    deadline = start + max_s
    for frame in frames[:max_frames]:
        store_one(target, frame)
        n += 1
        if time.perf_counter() >= deadline:
            break
    seconds = time.perf_counter() - start
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT count(*) FROM websocket_market_data").fetchone()[0]
    return {
        "messages": n,
        "rows": rows,
        "seconds": round(seconds, 4),
        "msgs_per_s": round(n / seconds, 1) if seconds > 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kalshi_pipeline.bench.seed_pattern")
    p.add_argument("frames", type=Path)
    p.add_argument("sqlite", type=Path)
    p.add_argument("--max-frames", type=int, default=20_000)
    p.add_argument("--max-s", type=float, default=20.0)
    args = p.parse_args(argv)
    frames = read_frames(args.frames)
    if not frames:
        print("no frames to replay", file=sys.stderr)
        return 1
    print(json.dumps(replay(frames, args.sqlite, args.max_frames, args.max_s)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

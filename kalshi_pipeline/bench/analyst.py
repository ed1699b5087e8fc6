"""An analyst's process: queries the live warehouse in a loop through the client API.

`python -m kalshi_pipeline.bench.analyst DATABASE [--seconds S] [--pause-ms MS]` keeps one client
(`warehouse.connect(read_only=True)`) and runs a mix of what analysts ask (a count, an aggregate per
market over the last minute, the newest ticks) until SIGTERM or the time is up, then prints one
JSON line: queries answered, errors (with the first few messages), latency p50/p99/max, and the
highest tick count seen (it must never go down: a restarted owner keeps everything committed).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kalshi_pipeline.warehouse import connect

QUERIES = (
    "SELECT count(*) FROM ticks",
    "SELECT market_ticker, count(*), max(price), min(yes_bid) FROM ticks "
    "WHERE received_at >= now() - INTERVAL 1 MINUTE GROUP BY 1 ORDER BY 2 DESC LIMIT 20",
    "SELECT market_ticker, received_at, price FROM ticks ORDER BY received_at DESC LIMIT 50",
)


def run(database: Path, seconds: float, pause_s: float) -> dict[str, Any]:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    errors: list[str] = []
    counts: list[int] = []
    went_down = 0
    with connect(database, read_only=True, timeout_s=60) as con:
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            sql = QUERIES[i % len(QUERIES)]
            i += 1
            started = time.monotonic()
            try:
                rows = con.execute(sql).fetchall()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            latencies.append((time.monotonic() - started) * 1000)
            if sql == QUERIES[0]:
                n = int(rows[0][0])
                if counts and n < counts[-1]:
                    went_down += 1
                counts.append(n)
            stop.wait(pause_s)
    latencies.sort()
    return {
        "queries": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:5],
        "p50_ms": round(latencies[len(latencies) // 2], 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "max_ticks_seen": max(counts, default=0),
        "count_went_down": went_down,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kalshi_pipeline.bench.analyst")
    p.add_argument("database", type=Path)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--pause-ms", type=float, default=20.0)
    args = p.parse_args(argv)
    print(json.dumps(run(args.database, args.seconds, args.pause_ms / 1000)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

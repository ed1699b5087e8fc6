"""A separate reader process: when does each stored tick become visible to someone else?

`python -m kalshi_pipeline.bench.reader DATABASE OUT [--interval-ms 50] [--max-s S]` polls the
warehouse the way an analyst's process would: one read-only client (`warehouse.connect`,
attached to the stream's writer while it serves) kept for the whole run, and a query for rows
stored since the last poll. For every WebSocket tick it sees for the first time it
appends `landing_segment,landing_offset,market_ticker,visible_ms` to OUT (CSV), where
`visible_ms` is the wall-clock time the query's answer arrived. SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import signal
import sys
import threading
import time
from pathlib import Path

from kalshi_pipeline.warehouse import Client, WarehouseError, connect

# `stored_at >= <constant>` (not `epoch_us(stored_at) >= ?`) lets DuckDB skip the row groups
# stored before the last poll by their min/max: the poll reads the new rows, not the whole table.
QUERY = (
    "SELECT landing_segment, landing_offset, market_ticker, epoch_us(stored_at) FROM ticks "
    "WHERE source = 'websocket' AND stored_at >= to_timestamp(? / 1000000)"
)


def poll(
    database: Path, out: Path, interval_s: float, max_s: float, jitter: float = 0.0
) -> dict[str, int]:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    client: Client | None = None
    seen: set[tuple[int, int, str]] = set()
    since_us = 0
    polls = failures = 0
    poll_ms: list[float] = []
    deadline = time.monotonic() + max_s
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["landing_segment", "landing_offset", "market_ticker", "visible_ms"])
        while not stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                if client is None:
                    client = connect(database, read_only=True, timeout_s=5.0)
                rows = client.execute(QUERY, [since_us]).fetchall()
                poll_ms.append((time.monotonic() - started) * 1000)
                visible_ms = time.time_ns() / 1e6
                polls += 1
            except WarehouseError:
                failures += 1  # not created yet, or busy for 5 s: try again
                rows = []
            except Exception:  # a table not there yet (the engine is migrating)
                failures += 1
                rows = []
                if client is not None:
                    client.close()
                    client = None
            for seg, off, ticker, stored_us in rows:
                key = (seg, off, ticker)
                if key in seen:
                    continue
                seen.add(key)
                writer.writerow([seg, off, ticker, f"{visible_ms:.3f}"])
                since_us = max(since_us, stored_us)
            f.flush()
            pause = interval_s * random.uniform(1 - jitter, 1 + jitter)
            stop.wait(max(0.0, pause - (time.monotonic() - started)))
    if client is not None:
        client.close()
    poll_ms.sort()
    return {
        "polls": polls,
        "failures": failures,
        "rows": len(seen),
        "poll_p50_ms": round(poll_ms[len(poll_ms) // 2], 1) if poll_ms else None,
        "poll_max_ms": round(poll_ms[-1], 1) if poll_ms else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kalshi_pipeline.bench.reader")
    p.add_argument("database", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--interval-ms", type=float, default=50.0)
    p.add_argument("--max-s", type=float, default=600.0)
    p.add_argument("--jitter", type=float, default=0.0, help="interval x uniform(1-j, 1+j)")
    args = p.parse_args(argv)
    result = poll(args.database, args.out, args.interval_ms / 1000, args.max_s, args.jitter)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

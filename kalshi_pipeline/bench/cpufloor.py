"""This machine's floor for the CPU scenario: a process that only commits to DuckDB at the
engine's pace at 200 ticks/s, and stores nothing else, receives nothing.

`python -m kalshi_pipeline.bench.cpufloor SECONDS [--rows N] [--every-s S]` opens an in-memory
DuckDB with one thread (as the stream's owner has) and, every S seconds (0.25: the engine commits
four times a second at 200 ticks/s), inserts N rows (50) of a table shaped like `ticks` in one
transaction. It prints one JSON line: its CPU time (user and system) over the wall time, the
commits made and the CPU each took.

Why it is measured: on some virtual machines a process pays for waking up in proportion to how
long it slept (the machine these figures come from: `SELECT 1` on DuckDB took 0.3 ms of CPU back
to back, 4 ms after 50 ms asleep, 40 ms after a second; an empty wake-up every 250 ms, 0.9 % of a
core). There the CPU figure of a process that commits a few times a second has a floor that no
change to the engine can go under, and this is it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import duckdb

TABLE = (
    "CREATE TABLE t (market_ticker VARCHAR, received_at TIMESTAMPTZ, price DECIMAL(10,4), "
    "yes_bid DECIMAL(10,4), yes_ask DECIMAL(10,4), volume DECIMAL(18,2), landing_offset INTEGER)"
)
INSERT = (
    "INSERT INTO t SELECT 'KX-' || (i % 50), now(), (i % 100) / 100, 0.1, 0.2, i, i "
    "FROM range(?, ? + ?) r(i)"
)


def measure(seconds: float, rows: int, every_s: float) -> dict[str, Any]:
    con = duckdb.connect(config={"threads": "1"})
    con.execute(TABLE)
    commits = 0
    start_cpu = os.times()
    start = time.monotonic()
    due = start
    while True:
        due += every_s
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        if time.monotonic() - start >= seconds:
            break
        con.execute("BEGIN TRANSACTION")
        con.execute(INSERT, [commits * rows, commits * rows, rows])
        con.execute("COMMIT")
        commits += 1
    wall = time.monotonic() - start
    end_cpu = os.times()
    cpu = (end_cpu.user - start_cpu.user) + (end_cpu.system - start_cpu.system)
    con.close()
    return {
        "seconds": round(wall, 2),
        "commits": commits,
        "rows_per_commit": rows,
        "cpu_s": round(cpu, 3),
        "cpu_share": round(cpu / wall, 4) if wall > 0 else None,
        "cpu_ms_per_commit": round(cpu / commits * 1000, 2) if commits else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kalshi_pipeline.bench.cpufloor")
    p.add_argument("seconds", type=float)
    p.add_argument("--rows", type=int, default=50)
    p.add_argument("--every-s", type=float, default=0.25)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.seconds, args.rows, args.every_s)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Our writer alone: load a landing log into DuckDB with the engine's `Writer`, no network.

`python -m kalshi_pipeline.bench.replay LANDING_DIR DATABASE [--max-s S]` owns the database
(as the engine does), then calls `Writer.load_once()` until the log is loaded (the same call
the engine's write loop makes, and what a restarted engine does first with a log an old run
left). It prints one JSON line:
WebSocket ticks stored, seconds, ticks per second, and whether the log was fully loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kalshi_pipeline.stream.stats import EngineStats
from kalshi_pipeline.stream.writer import Writer
from kalshi_pipeline.warehouse.owner import Owner


def replay(landing: Path, database: Path, max_s: float) -> dict[str, object]:
    stats = EngineStats()
    with Owner(database) as owner:
        writer = Writer(owner, landing, stats)
        start = time.perf_counter()
        deadline = start + max_s
        while time.perf_counter() < deadline:
            if writer.load_once() == 0:
                break
        seconds = time.perf_counter() - start
        left = writer._backlog()  # the writer's own count of bytes not yet loaded
    return {
        "ticks": stats.ticks_stored,
        "ticks_ws": stats.ticks_stored_ws,
        "batches": stats.rows_loaded_batches,
        "seconds": round(seconds, 4),
        "ticks_per_s": round(stats.ticks_stored / seconds, 1) if seconds > 0 else None,
        "backlog_bytes": left,
        "complete": left == 0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kalshi_pipeline.bench.replay")
    p.add_argument("landing", type=Path)
    p.add_argument("database", type=Path)
    p.add_argument("--max-s", type=float, default=300.0)
    args = p.parse_args(argv)
    print(json.dumps(replay(args.landing, args.database, args.max_s)))
    if argv is None:  # this process's own command line: skip a teardown DuckDB 1.5.5 may hang in
        from kalshi_pipeline.cli import exit_without_teardown

        exit_without_teardown(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

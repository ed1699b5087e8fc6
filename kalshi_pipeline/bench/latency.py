"""Latency at 1,000 ticks/s: tick to stored, and tick to visible to a separate reader process.

The simulator publishes Poisson updates and writes each to its ledger with `emitted_at_ms`. The
engine runs in its own process with its default settings; a reader process polls through the
warehouse API every `reader_interval_ms` (one client kept for the run, as an analyst's notebook
would) and notes when each row first became visible. Afterwards each ledger line of the
measured window is joined to its `ticks` row on market, exchange time and every value.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

from kalshi_pipeline.bench import analysis
from kalshi_pipeline.bench.context import Context, engine_status, open_db
from kalshi_pipeline.bench.procs import spawn, terminate


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    folder = ctx.folder("latency")
    db = folder / "k.duckdb"
    ledger = folder / "ledger.jsonl"
    visible = folder / "visible.csv"
    with ctx.simulator(markets=plan.latency_markets, rate=plan.latency_rate, ledger=ledger) as sim:
        engine = ctx.engine("latency", sim, db)
        startup = ctx.settle(engine, plan.settle_s, "latency")
        reader = spawn(
            [
                sys.executable,
                "-m",
                "kalshi_pipeline.bench.reader",
                str(db),
                str(visible),
                "--interval-ms",
                str(plan.reader_interval_ms),
                "--jitter",
                str(plan.reader_jitter),
                "--max-s",
                str(plan.latency_s + 120),
            ],
            ctx.env,
            stderr_path=ctx.log("reader"),
        )
        try:
            ctx.sleep(plan.pause_s, alive=engine.alive)
            t0 = time.time_ns() // 1_000_000
            ctx.sleep(plan.latency_s, show=lambda: engine_status(engine), alive=engine.alive)
            t1 = time.time_ns() // 1_000_000
            # let the last changes of the window reach the database and the reader
            ctx.sleep(plan.pause_s, alive=engine.alive)
        finally:
            reader.send_signal(signal.SIGTERM)
            try:
                out, _ = reader.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                out = ""
            terminate(reader, timeout_s=5)
        reader_stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        status = dict(engine.status)
        engine.stop()
    with open_db(db, read_only=True) as con:
        result = analysis.latency(con, ledger, visible, (t0, t1))
        busy = sum(1 for e in analysis.feed_events(con) if e[2] == "database_busy")
    seconds = (t1 - t0) / 1000
    return {
        "figures": {
            "latency_p50_ms": result["stored_p50_ms"],
            "latency_p99_ms": result["stored_p99_ms"],
            "visible_p50_ms": result["visible_p50_ms"],
            "visible_p99_ms": result["visible_p99_ms"],
        },
        "details": {
            **result,
            "window_s": seconds,
            "published_per_s": round(result["published"] / seconds, 1) if seconds else None,
            "reader_interval_ms": plan.reader_interval_ms,
            "engine_status_at_end": status,
            **startup,
            "reader": reader_stats,
            "writer_busy_events": busy,
        },
    }

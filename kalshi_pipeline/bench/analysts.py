"""Five analyst clients against the live stream (design: "analyst load").

The engine streams `analysts_rate` ticks/s in its own process; after a baseline window with no
clients, five `bench.analyst` processes query the live warehouse through the client API (attached
to the engine's Quack server) for a window of the same length. Reported: the engine's stored rate
in both windows (the stream keeps its pace when the second is as high as the first), the
clients' query latencies and errors, and frames stored twice.
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

CLIENTS = 5


def _window(ctx: Context, engine: Any, seconds: float, label: str) -> dict[str, float]:
    assert engine.sampler is not None
    s0, c0, t0 = dict(engine.status), engine.sampler.sample(), time.monotonic()
    ctx.sleep(seconds, show=lambda: f"{label} | {engine_status(engine)}", alive=engine.alive)
    s1, c1, t1 = dict(engine.status), engine.sampler.sample(), time.monotonic()
    wall = t1 - t0
    cpu = None
    if c0 is not None and c1 is not None:
        cpu = round(100 * (c1[2] - c0[2]) / wall, 1)
    stored = s1.get("ticks_stored_ws", 0) - s0.get("ticks_stored_ws", 0)
    return {
        "stored_per_s": round(stored / wall, 1),
        "received_per_s": round((s1.get("ws_frames", 0) - s0.get("ws_frames", 0)) / wall, 1),
        "backlog_bytes_at_end": int(s1.get("backlog_bytes", 0)),
        "cpu_percent_of_core": cpu,
    }


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    db = ctx.folder("analysts") / "k.duckdb"
    with ctx.simulator(markets=plan.analysts_markets, rate=plan.analysts_rate) as sim:
        engine = ctx.engine("analysts", sim, db)
        startup = ctx.settle(engine, plan.settle_s, "analysts")
        alone = _window(ctx, engine, plan.analysts_s, "no clients")
        clients = [
            spawn(
                [
                    sys.executable,
                    "-m",
                    "kalshi_pipeline.bench.analyst",
                    str(db),
                    "--seconds",
                    str(plan.analysts_s + 120),
                    "--pause-ms",
                    "20",
                ],
                ctx.env,
                stderr_path=ctx.log(f"analyst-{i}"),
            )
            for i in range(CLIENTS)
        ]
        reports: list[dict[str, Any]] = []
        try:
            ctx.sleep(plan.pause_s, alive=engine.alive)
            loaded = _window(ctx, engine, plan.analysts_s, f"{CLIENTS} clients querying")
        finally:
            for c in clients:
                c.send_signal(signal.SIGTERM)
            for c in clients:
                try:
                    out, _ = c.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    out = ""
                terminate(c, timeout_s=5)
                if out.strip():
                    reports.append(json.loads(out.strip().splitlines()[-1]))
        engine.stop()
    with open_db(db, read_only=True) as con:
        dupes = analysis.duplicates(con)
    pace = loaded["stored_per_s"] / alone["stored_per_s"] if alone["stored_per_s"] else None
    p99s = [r["p99_ms"] for r in reports if r.get("p99_ms") is not None]
    p50s = [r["p50_ms"] for r in reports if r.get("p50_ms") is not None]
    errors = sum(int(r.get("errors", 0)) for r in reports) + CLIENTS - len(reports)
    return {
        "figures": {
            "analysts_pace": round(pace, 3) if pace is not None else None,
            "analysts_query_p99_ms": max(p99s) if p99s else None,
            "analysts_errors": errors,
            "analysts_duplicates": dupes,
        },
        "details": {
            "rate": plan.analysts_rate,
            "markets": plan.analysts_markets,
            "window_s": plan.analysts_s,
            "without_clients": alone,
            "with_clients": loaded,
            "query_p50_ms": sorted(p50s)[len(p50s) // 2] if p50s else None,
            "queries": sum(int(r.get("queries", 0)) for r in reports),
            "clients": reports,
            **startup,
        },
    }

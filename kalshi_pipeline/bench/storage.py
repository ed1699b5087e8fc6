"""Storage: the two feeds compared on the same activity, and bytes per tick of both.

The engine runs in mode `both` over a realistic exchange (25,000 markets, 200 updates/s): the
WebSocket stores every change, the poller passes over every market each `poll_interval_s` and
stores only those that changed, and keeps the figures of every pass. The warehouse's own report
SQL then measures the bytes each source needs (`measure_storage`: written to a scratch database
and counted) and what storing every market on every poll would have cost
(`storage_comparison`), scaled to an hour. Bytes per tick are measured here too, with DuckDB's
default blocks (see `analysis.stored_bytes`); the headline figure comes from the larger memory run.
"""

from __future__ import annotations

import time
from typing import Any

from kalshi_pipeline.bench import analysis
from kalshi_pipeline.bench.context import Context, engine_status, open_db


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    folder = ctx.folder("storage")
    db = folder / "k.duckdb"
    with ctx.simulator(markets=plan.storage_markets, rate=plan.storage_rate) as sim:
        engine = ctx.engine("storage", sim, db, mode="both", status_every_s=1.0)
        startup = ctx.settle(engine, plan.settle_s, "storage")
        started = time.monotonic()
        ctx.sleep(plan.storage_s, show=lambda: engine_status(engine), alive=engine.alive)
        engine.stop()
        seconds = time.monotonic() - started
    ctx.display.status("measuring storage")
    with open_db(db) as con:
        first = con.execute("SELECT epoch(min(received_at)), epoch(max(received_at)) FROM ticks")
        lo, hi = first.fetchone() or (0, 0)
        span = float(hi - lo) if lo is not None and hi is not None else seconds
        result = analysis.storage(con, span, db)
        passes = analysis.poll_passes(con)
    poll = [p for p in passes if p["purpose"] == "poll"]
    return {
        "figures": {
            "bytes_per_tick_storage_run": result["bytes_per_tick"],
            "storage_ratio_naive_http_vs_ws": result["ratio_naive_http_vs_ws"],
            "storage_ratio_http_changes_vs_ws": result["ratio_http_changes_vs_ws"],
            "storage_ws_bytes_per_hour": result["ws_bytes_per_hour"],
            "storage_naive_http_bytes_per_hour": result["naive_http_bytes_per_hour"],
            "storage_http_changes_bytes_per_hour": result["http_changes_bytes_per_hour"],
        },
        "details": {
            **result,
            "markets": plan.storage_markets,
            **startup,
            "rate": plan.storage_rate,
            "poll_passes": len(poll),
            "poll_pass_mean_s": round(sum(p["seconds"] for p in poll) / len(poll), 3)
            if poll
            else None,
        },
    }

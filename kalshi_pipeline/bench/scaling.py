"""How cost grows with the number of markets: 1k, 10k and 100k.

For each size, one simulator lists that many markets and pre-encodes the firehose (which moves
at most 1,000 of them; the rest are listed, reconciled and held as metadata). The engine in
websocket mode reconciles the whole universe over REST at start while it takes the firehose:
ticks/s and peak RSS. Then the engine in http mode makes polling passes over every market under
the 20 requests/s limit: seconds per pass and peak RSS.
"""

from __future__ import annotations

import math
from typing import Any

from kalshi_pipeline.bench import analysis
from kalshi_pipeline.bench.context import FIREHOSE_CONFIG, Context, engine_status, open_db

PAGE = 1_000  # markets per GET /markets page
PASSES = 2


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    rows = []
    for markets in plan.scaling_markets:
        rows.append(one_size(ctx, markets, plan.scaling_frames))
    return {
        "figures": {"scaling": rows},
        "details": {"frames": plan.scaling_frames, "requests_per_s": 20},
    }


def one_size(ctx: Context, markets: int, frames: int) -> dict[str, Any]:
    folder = ctx.folder(f"scaling/{markets}")
    ws_db = folder / "ws" / "k.duckdb"
    http_db = folder / "http" / "k.duckdb"
    ctx.display.status(f"{markets:,} markets: simulator")
    with ctx.simulator(markets=markets, rate=0, firehose=frames) as sim:
        engine = ctx.engine(
            f"scaling-{markets}-ws", sim, ws_db, config=FIREHOSE_CONFIG, target_ws_ticks=frames
        )
        complete = engine.wait_for(
            lambda e: e.target is not None,
            timeout_s=ctx.plan.scaling_wait_s,
            what=f"{frames:,} ticks stored",
            on_wait=lambda e: ctx.display.status(f"{markets:,} markets: " + engine_status(e)),
            required=False,
        )
        assert engine.sampler is not None
        ws_peak = engine.sampler.peak_rss_mb()
        last = dict(engine.target or engine.status)
        engine.kill()  # measured; a clean stop would wait for a writer that may be far behind
        open_markets = sim.stats()["markets_by_status"].get("active", markets)
        pages = max(1, math.ceil(open_markets / PAGE))
        poller = ctx.engine(
            f"scaling-{markets}-http", sim, http_db, mode="http", status_every_s=0.5
        )
        poller.wait_for(
            lambda e: e.status.get("http_pages", 0) >= PASSES * pages,
            timeout_s=ctx.plan.scaling_wait_s + PASSES * pages / 10,
            what=f"{PASSES} polling passes",
            on_wait=lambda e: ctx.display.status(
                f"{markets:,} markets: polling, {e.status.get('http_pages', 0)} pages"
            ),
        )
        assert poller.sampler is not None
        http_peak = poller.sampler.peak_rss_mb()
        http_stored = poller.status.get("ticks_stored_http", 0)
        poller.stop()  # flushes its landing log, where the pass figures are read
    with open_db(ws_db, read_only=True) as con:
        first_ns = analysis.first_ws_received_ns(con)
    passes = [p for p in analysis.landing_passes(http_db.parent / "landing") if p["pages"] >= pages]
    pass_s = sorted(p["seconds"] for p in passes)
    seconds = (last["t_ns"] - first_ns) / 1e9 if first_ns else None
    return {
        "markets": markets,
        "ticks_per_s": round(last["ticks_stored_ws"] / seconds, 1) if seconds else 0.0,
        "complete": complete,
        "peak_rss_mb": ws_peak,
        "http_pass_s": pass_s[len(pass_s) // 2] if pass_s else None,
        "http_pages": pages,
        "http_min_pass_s": round(pages / 20, 2),
        "http_peak_rss_mb": http_peak,
        "http_ticks_stored": http_stored,
    }

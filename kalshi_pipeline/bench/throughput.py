"""Throughput: the firehose into DuckDB through the real engine, against the loopback limit, our
writer alone, and the predecessor's write path on the same frames.

One simulator pre-encodes N ticker frames and sends them to every new ticker subscription as
fast as the socket takes them. First the bare client (receive and decode only) takes them: that
is the loopback limit. Then the engine, in its own process, in websocket mode with the real
landing log and writer: ticks stored over the time from its first frame's arrival to the moment
all N are stored. Its landing log is then loaded again by the writer alone into a fresh database,
and the first frames are written the predecessor's way (one SQLite commit each).
"""

from __future__ import annotations

import shutil
from typing import Any

from kalshi_pipeline.bench import analysis
from kalshi_pipeline.bench.context import FIREHOSE_CONFIG, Context, engine_status, open_db


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    n = plan.throughput_frames
    folder = ctx.folder("throughput")
    frames_file = folder / "frames.bin"
    db = folder / "engine" / "k.duckdb"
    ctx.display.status(f"simulator: pre-encoding {n:,} frames")
    with ctx.simulator(markets=plan.throughput_markets, rate=0, firehose=n) as sim:
        ctx.display.status("loopback client: receive and decode only")
        loop = ctx.child(
            "kalshi_pipeline.bench.loopback",
            [
                sim.ws_url,
                str(n),
                "--timeout",
                str(max(60.0, n / 2_000)),
                "--capture",
                str(frames_file),
                "--capture-n",
                str(plan.seed_frames),
            ],
            timeout_s=max(90.0, n / 2_000 + 30),
            name="loopback",
        )
        ctx.display.status("engine: firehose into DuckDB")
        engine = ctx.engine("throughput", sim, db, config=FIREHOSE_CONFIG, target_ws_ticks=n)
        engine.wait_for(
            lambda e: e.target is not None,
            timeout_s=max(120.0, n / 2_000),
            what=f"{n:,} ticks stored",
            on_wait=lambda e: ctx.display.status(engine_status(e)),
        )
        assert engine.sampler is not None and engine.target is not None
        peak = engine.sampler.peak_rss_mb()
        stopped = engine.stop()
    with open_db(db, read_only=True) as con:
        first_ns = analysis.first_ws_received_ns(con)
        stored_ws = analysis.count_ticks(con, "websocket")
        dup = analysis.duplicates(con)
    assert first_ns is not None
    seconds = (engine.target["t_ns"] - first_ns) / 1e9
    tps = engine.target["ticks_stored_ws"] / seconds

    ctx.display.status("our writer alone, on the engine's landing log")
    replay_dir = ctx.folder("throughput/replay")
    shutil.copytree(db.parent / "landing", replay_dir / "landing")
    writer = ctx.child(
        "kalshi_pipeline.bench.replay",
        [
            str(replay_dir / "landing"),
            str(replay_dir / "k.duckdb"),
            "--max-s",
            str(plan.replay_max_s),
        ],
        timeout_s=plan.replay_max_s + 120,
        name="replay",
    )
    ctx.display.status("the predecessor's write path: one SQLite commit per message")
    seed = ctx.child(
        "kalshi_pipeline.bench.seed_pattern",
        [
            str(frames_file),
            str(folder / "seed.sqlite"),
            "--max-frames",
            str(plan.seed_frames),
            "--max-s",
            str(plan.seed_max_s),
        ],
        timeout_s=plan.seed_max_s + 60,
        name="seed-pattern",
    )
    limit = loop["msgs_per_s"]
    seed_rate = seed["msgs_per_s"]
    writer_rate = writer["ticks_per_s"]
    return {
        "figures": {
            "throughput_ticks_per_s": round(tps, 1),
            "loopback_limit_msgs_per_s": limit,
            "throughput_vs_limit": round(tps / limit, 3) if limit else None,
            "writer_only_ticks_per_s": writer_rate,
            "seed_pattern_ticks_per_s": seed_rate,
            "writer_vs_seed_pattern": round(writer_rate / seed_rate, 1)
            if writer_rate and seed_rate
            else None,
            "engine_vs_seed_pattern": round(tps / seed_rate, 1) if seed_rate else None,
            "peak_rss_firehose_mb": peak,
        },
        "details": {
            "frames": n,
            "engine_seconds": round(seconds, 3),
            "engine_ticks_stored_ws": stored_ws,
            "engine_frames_stored_twice": dup,
            "engine_drained_at_stop": (stopped or {}).get("drained"),
            "loopback": loop,
            "writer_only": writer,
            "seed_pattern": seed,
        },
    }

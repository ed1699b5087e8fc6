"""Compression: the firehose with permessage-deflate on and off, to choose the feed's default.

For each setting, one simulator pre-encodes N ticker frames and sends them to every new ticker
subscription as fast as the socket takes them (through the compressor when the client offered
permessage-deflate). First the bare client (receive, decompress, decode) takes them: its CPU per
tick and the bytes that arrived on its socket per tick. Then the engine, in its own process,
stores them in DuckDB: its CPU per tick (process time, all threads, from its first stored tick to
the last) and ticks stored per second. The simulator's own compression cost is not counted.
"""

from __future__ import annotations

from typing import Any

from kalshi_pipeline.bench.context import Context, engine_status


def _one(ctx: Context, compression: bool) -> dict[str, Any]:
    plan = ctx.plan
    n = plan.compression_frames
    label = "on" if compression else "off"
    db = ctx.folder(f"compression-{label}") / "k.duckdb"
    ctx.display.status(f"compression {label}: simulator pre-encoding {n:,} frames")
    with ctx.simulator(markets=plan.compression_markets, rate=0, firehose=n) as sim:
        ctx.display.status(f"compression {label}: bare client")
        loop = ctx.child(
            "kalshi_pipeline.bench.loopback",
            [sim.ws_url, str(n), "--timeout", str(max(60.0, n / 1_000))]
            + (["--compression"] if compression else []),
            timeout_s=max(90.0, n / 1_000 + 30),
            name=f"loopback-compression-{label}",
        )
        ctx.display.status(f"compression {label}: engine into DuckDB")
        engine = ctx.engine(
            f"compression-{label}",
            sim,
            db,
            config={"websocket_compression": compression},
            target_ws_ticks=n,
            profile_at_start=False,
        )
        engine.wait_for(
            lambda e: e.status.get("ticks_stored_ws", 0) > 0,
            timeout_s=plan.settle_s,
            what="the first WebSocket ticks stored",
            on_wait=lambda e: ctx.display.status(engine_status(e)),
        )
        assert engine.sampler is not None
        before = engine.sampler.sample()
        ticks_before = engine.status.get("ticks_stored_ws", 0)
        engine.wait_for(
            lambda e: e.target is not None,
            timeout_s=max(120.0, n / 1_000),
            what=f"{n:,} ticks stored",
            on_wait=lambda e: ctx.display.status(engine_status(e)),
        )
        after = engine.sampler.sample()
        assert engine.target is not None and before is not None and after is not None
        ticks = engine.target["ticks_stored_ws"] - ticks_before
        if ticks <= 0 and engine.sampler.samples:
            # a tiny run stored everything before the window opened: measure from the start
            before, ticks = engine.sampler.samples[0], engine.target["ticks_stored_ws"]
        wall = after[0] - before[0]
        engine.stop()
    return {
        "compression": label,
        "negotiated": loop.get("compression"),
        "wire_bytes_per_tick": loop.get("wire_bytes_per_tick"),
        "frame_bytes_per_tick": loop.get("payload_bytes_per_tick"),
        "client_cpu_us_per_tick": loop.get("cpu_us_per_tick"),
        "client_msgs_per_s": loop.get("msgs_per_s"),
        "engine_cpu_us_per_tick": round((after[2] - before[2]) / ticks * 1e6, 2)
        if ticks > 0
        else None,
        "engine_ticks_per_s": round(ticks / wall, 1) if wall > 0 else None,
        "frames": n,
        "loopback": loop,
    }


def run(ctx: Context) -> dict[str, Any]:
    rows = [_one(ctx, False), _one(ctx, True)]
    off, on = rows
    ratio = (
        round(off["wire_bytes_per_tick"] / on["wire_bytes_per_tick"], 2)
        if off["wire_bytes_per_tick"] and on["wire_bytes_per_tick"]
        else None
    )
    return {
        "figures": {"compression": [{k: v for k, v in r.items() if k != "loopback"} for r in rows]},
        "details": {"wire_bytes_saved_ratio": ratio, "off": off["loopback"], "on": on["loopback"]},
    }

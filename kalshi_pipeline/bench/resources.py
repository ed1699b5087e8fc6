"""Resources of the engine process alone, sampled from outside with psutil.

- cpu: 200 ticks/s over 25,000 markets; after a warm-up (start-up reconciliation done), the
  process CPU time (user + system, all threads) over the window divided by the wall time: the
  share of one core. Then this machine's floor for it (`cpufloor.py`): a process that only
  commits 50 rows to DuckDB four times a second, as the engine does at this rate.
- memory: 50,000 ticks/s offered by the simulator; peak RSS, how much the engine kept up, and
  what its ticks take in DuckDB (`bytes_per_tick`: the largest body of simulated ticks in the run,
  so the block-granular measurement resolves it to a fraction of a byte).
- locked: another program holds the database read-write (a DuckDB shell that opened the file
  while no stream ran) when the stream starts; the stream receives into its landing log until
  the holder lets go: peak RSS during the hold and the catch-up, the backlog it left, how long
  the catch-up took. (While the stream runs, the file is its own: nobody can take it.)
- analysts: five client processes query the live warehouse (through the stream's Quack server)
  while the stream writes; whether the stream kept its pace, the clients' latencies and errors.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from kalshi_pipeline.bench import analysis
from kalshi_pipeline.bench.context import FIREHOSE_CONFIG, Context, engine_status, open_db
from kalshi_pipeline.bench.procs import BenchError, spawn, tail, terminate
from kalshi_pipeline.warehouse import Warehouse

HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
print("released", flush=True)
"""


def cpu(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    db = ctx.folder("cpu") / "k.duckdb"
    with ctx.simulator(markets=plan.cpu_markets, rate=plan.cpu_rate) as sim:
        engine = ctx.engine(
            "cpu", sim, db, status_every_s=1.0, sample_every_s=1.0, profile_at_start=False
        )
        startup = ctx.settle(engine, plan.settle_s, "cpu")
        ctx.sleep(plan.cpu_warmup_s, alive=engine.alive)
        assert engine.sampler is not None
        engine.profile_now()  # the window only, not the start-up
        before = engine.sampler.sample()
        ticks_before = engine.status.get("ticks_stored_ws", 0)
        ctx.sleep(plan.cpu_s, show=lambda: engine_status(engine), alive=engine.alive)
        after = engine.sampler.sample()
        ticks_after = engine.status.get("ticks_stored_ws", 0)
        peak = engine.sampler.peak_rss_mb()
        engine.stop()
    if before is None or after is None:
        raise BenchError("could not sample the engine's CPU time")
    wall = after[0] - before[0]
    cpu_s = after[2] - before[2]
    # what a process that only commits at the engine's pace costs on this machine (cpufloor.py)
    ctx.display.status("cpu: this machine's floor (DuckDB commits at the engine's pace alone)")
    floor = ctx.child(
        "kalshi_pipeline.bench.cpufloor",
        [str(plan.cpu_floor_s)],
        timeout_s=plan.cpu_floor_s + 60,
        name="cpu-floor",
    )
    return {
        "figures": {
            "cpu_share_at_200_tps": round(cpu_s / wall, 4),
            "cpu_floor_share": floor["cpu_share"],
        },
        "details": {
            "floor": floor,
            "markets": plan.cpu_markets,
            "rate": plan.cpu_rate,
            "window_s": round(wall, 2),
            "cpu_s": round(cpu_s, 3),
            "ticks_per_s_stored": round((ticks_after - ticks_before) / wall, 1),
            "peak_rss_mb": peak,
            **startup,
        },
    }


def memory(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    db = ctx.folder("memory") / "k.duckdb"
    with ctx.simulator(markets=plan.memory_markets, rate=plan.memory_rate) as sim:
        engine = ctx.engine("memory", sim, db, config=FIREHOSE_CONFIG)
        engine.wait_for(lambda e: e.status.get("ticks_stored_ws", 0) > 0, 60, "the first ticks")
        s0 = dict(engine.status)
        published0 = sim.stats()["ledger_lines"]
        t0 = time.monotonic()
        ctx.sleep(plan.memory_s, show=lambda: engine_status(engine), alive=engine.alive)
        wall = time.monotonic() - t0
        s1 = dict(engine.status)
        published1 = sim.stats()["ledger_lines"]
        assert engine.sampler is not None
        peak = engine.sampler.peak_rss_mb()
        engine.kill()  # measured; a clean stop would only spend its 10 s loading the backlog
    # the largest body of simulated ticks in the run: what a tick costs in DuckDB at length
    ctx.display.status("measuring storage of the ticks stored")
    with open_db(db) as con:
        ticks = analysis.count_ticks(con, "websocket")
        size = analysis.stored_bytes(con, "source = 'websocket'")
        by_column = analysis.stored_bytes_by_column(con, "source = 'websocket'")
    return {
        "figures": {
            "peak_rss_mb": peak,
            "bytes_per_tick": round(size / ticks, 2) if ticks else None,
            "memory_offered_ticks_per_s": round((published1 - published0) / wall, 1),
            "memory_stored_ticks_per_s": round(
                (s1.get("ticks_stored_ws", 0) - s0.get("ticks_stored_ws", 0)) / wall, 1
            ),
        },
        "details": {
            "window_s": round(wall, 2),
            "markets": plan.memory_markets,
            "ticks_stored": ticks,
            "bytes_per_tick_resolution": round(analysis.BLOCK / ticks, 2) if ticks else None,
            # each column alone, in stored order (each to within the resolution)
            "bytes_per_tick_by_column": {c: round(b / ticks, 2) for c, b in by_column.items()}
            if ticks
            else {},
            "received_per_s": round((s1.get("ws_frames", 0) - s0.get("ws_frames", 0)) / wall, 1),
            "backlog_bytes_at_end": s1.get("backlog_bytes"),
        },
    }


def locked(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    db = ctx.folder("locked") / "k.duckdb"
    Warehouse(db).migrate()
    with ctx.simulator(markets=plan.memory_markets, rate=plan.locked_rate) as sim:
        holder_log = ctx.log("holder")
        holder = spawn(
            [sys.executable, "-c", HOLD, str(db), str(plan.locked_hold_s)],
            ctx.env,
            stderr_path=holder_log,
        )
        try:
            assert holder.stdout is not None
            if holder.stdout.readline().strip() != "held":
                raise BenchError(f"the holder could not take the database:\n{tail(holder_log)}")
            engine = ctx.engine("locked", sim, db, config=FIREHOSE_CONFIG)
            assert engine.sampler is not None
            before = engine.sampler.peak_rss_mb()
            held_at = time.monotonic()
            max_backlog = 0
            while holder.poll() is None:
                max_backlog = max(max_backlog, int(engine.status.get("backlog_bytes", 0)))
                ctx.display.status("database held by another process | " + engine_status(engine))
                if time.monotonic() - held_at > plan.locked_hold_s + 30:
                    raise BenchError("the holder did not release the database")
                if not engine.alive():
                    raise BenchError(
                        f"the engine exited while the database was held:\n{tail(engine.log)}"
                    )
                time.sleep(0.25)
            released_at = time.monotonic()
        finally:
            terminate(holder, timeout_s=5)
        caught_up = ctx.catch_up(
            engine, max(60.0, plan.locked_hold_s * 2), "locked", "the backlog loaded after the hold"
        )
        caught_up_at = time.monotonic()
        peak_hold = engine.sampler.peak_rss_mb(held_at, released_at)
        peak_after = engine.sampler.peak_rss_mb(released_at, caught_up_at)
        engine.stop()
    return {
        "figures": {
            "peak_rss_locked_mb": peak_hold,
        },
        "details": {
            "rate": plan.locked_rate,
            "hold_s": round(released_at - held_at, 1),
            "rss_before_mb": before,
            "peak_rss_during_hold_mb": peak_hold,
            "peak_rss_catching_up_mb": peak_after,
            "max_backlog_bytes": max_backlog,
            "caught_up": caught_up,
            "catch_up_s": round(caught_up_at - released_at, 1),
        },
    }

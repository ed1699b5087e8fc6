"""Order-book throughput: the simulator's order-book firehose into DuckDB through the real engine,
against the loopback limit for delta frames, in one run.

One simulator builds N `orderbook_delta` frames over markets of their own (`--book-firehose`,
series `KXSIMBOOK`, at most 500 markets) and sends them, after each market's snapshot, to every
order-book subscription that covers all those markets, as fast as the socket takes them. First
the bare client (`bookloop.py`: subscribe, receive and decode with the stream's decoder, store
nothing) takes them: that is the loopback limit. Then the engine, in its own process, as
`kalshi-pipeline stream --channels orderbook_delta` over that series (uncompressed, as the ticker
firehose scenarios run; the REST book check off, since REST shows each book as it is after the
firehose while the stream replays it): deltas stored over the time from its first delta frame's
arrival to the moment all N are stored, as the ticker throughput is measured. The target: at
least 0.8 of the limit. The engine's CPU time per delta (all its threads) is sampled over the
same span; its database is then counted: every firehose delta stored exactly once.
"""

from __future__ import annotations

from typing import Any

from kalshi_pipeline.bench import analysis
from kalshi_pipeline.bench.context import FIREHOSE_CONFIG, Context, backlog_and_rss, open_db
from kalshi_pipeline.bench.procs import BenchError, EngineProcess
from kalshi_pipeline.simulator.bookfirehose import book_firehose_market_count
from kalshi_pipeline.simulator.universe import BOOK_FIREHOSE_SERIES

BOOK_FIREHOSE_CONFIG: dict[str, Any] = {
    **FIREHOSE_CONFIG,
    "channels": ["orderbook_delta"],
    "scope": {"series": [BOOK_FIREHOSE_SERIES]},
    "book_check_every_s": 0,
}


def status(e: EngineProcess) -> str:
    return f"deltas stored {e.status.get('book_deltas_stored', 0):,} | {backlog_and_rss(e)}"


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    n = plan.books_throughput_frames
    markets = plan.books_throughput_markets
    db = ctx.folder("books_throughput") / "engine" / "k.duckdb"
    wait_s = max(120.0, n / 2_000)
    ctx.display.status(f"simulator: building {n:,} order-book delta frames")
    with ctx.simulator(markets=markets, rate=0, book_firehose=n) as sim:
        ctx.display.status("loopback client: subscribe, receive and decode delta frames only")
        loop = ctx.child(
            "kalshi_pipeline.bench.bookloop",
            [sim.ws_url, sim.rest_url, str(n), "--timeout", str(wait_s)],
            timeout_s=wait_s + 30,
            name="bookloop",
        )
        if not loop.get("complete"):
            raise BenchError(f"the delta loopback client got {loop.get('frames')} of {n} frames")
        ctx.display.status("engine: order-book firehose into DuckDB")
        engine = ctx.engine(
            "books_throughput",
            sim,
            db,
            config=BOOK_FIREHOSE_CONFIG,
            target_book_deltas=n,
            status_every_s=0.05,
        )
        engine.wait_for(
            lambda e: e.status.get("book_deltas_stored", 0) > 0,
            timeout_s=plan.settle_s + wait_s,
            what="the first order-book deltas stored",
            on_wait=lambda e: ctx.display.status(status(e)),
        )
        assert engine.sampler is not None
        before = engine.sampler.sample()
        deltas_before = int(engine.status.get("book_deltas_stored", 0))
        engine.wait_for(
            lambda e: e.target is not None,
            timeout_s=wait_s,
            what=f"{n:,} order-book deltas stored",
            on_wait=lambda e: ctx.display.status(status(e)),
        )
        after = engine.sampler.sample()
        assert engine.target is not None
        deltas_after = int(engine.target["book_deltas_stored"])
        peak = engine.sampler.peak_rss_mb()
        stopped = engine.stop()
    with open_db(db, read_only=True) as con:
        stored = analysis.stored_deltas(con)
    first_ns = stored["first_received_ns"]
    if first_ns is None:
        raise BenchError("the engine stored no order-book deltas")
    seconds = (engine.target["t_ns"] - first_ns) / 1e9
    dps = engine.target["book_deltas_stored"] / seconds
    limit = loop["msgs_per_s"]
    cpu_us = None
    if before is not None and after is not None and deltas_after > deltas_before:
        cpu_us = round((after[2] - before[2]) / (deltas_after - deltas_before) * 1e6, 2)
    return {
        "figures": {
            "books_deltas_per_s_engine": round(dps, 1),
            "books_loopback_limit_deltas_per_s": limit,
            "books_deltas_vs_limit": round(dps / limit, 3) if limit else None,
        },
        "details": {
            "frames": n,
            "markets": book_firehose_market_count(n, markets),
            "engine_seconds": round(seconds, 3),
            "engine_deltas_stored": stored["rows"],
            "engine_distinct_delta_frames": stored["distinct_frames"],
            "engine_deltas_stored_twice": stored["rows"] - stored["distinct_frames"],
            "engine_cpu_us_per_delta": cpu_us,
            "engine_cpu_window_deltas": deltas_after - deltas_before,
            "engine_drained_at_stop": (stopped or {}).get("drained"),
            "peak_rss_mb": peak,
            "loopback": loop,
        },
    }

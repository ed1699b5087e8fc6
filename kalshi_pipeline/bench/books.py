"""Order books: bytes per delta, the book of a market at time T over a day of deltas, and deltas
stored per second through the writer.

A synthetic day (`bookday.py`: the simulator's own order flow over `books_markets` markets,
`books_deltas` deltas spread over 24 hours) is landed as the feed lands frames, then loaded by the
stream's writer (decode and commit, exactly the stream's path, timed: deltas stored per second).
Bytes per delta are measured as the ticks' are (the table copied in stored order to a scratch
database with the warehouse's block size, checkpointed, its used blocks counted), per column too.
The book at T is asked through the warehouse client attached to the owner (as an analyst asks
it), for random markets at random times of the day: p50 and p99.

The throughput here is the writer's path from a landing log of delta frames, not the engine's
receive loop; the engine's, against the loopback limit for delta frames, is the
`books_throughput` scenario (bookthroughput.py). Beside the wall-clock rate the writer's CPU
time is reported, since the machine's load changes the former and hardly the latter.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from kalshi_pipeline.bench.analysis import BLOCK
from kalshi_pipeline.bench.bookday import write_day
from kalshi_pipeline.bench.context import Context, free_port
from kalshi_pipeline.stream.writer import Writer
from kalshi_pipeline.warehouse import connect
from kalshi_pipeline.warehouse.books import book_at
from kalshi_pipeline.warehouse.owner import Owner
from kalshi_pipeline.warehouse.reports import scratch_bytes

DAY_START_NS = 1_764_201_600_000_000_000  # 2025-11-27 00:00 UTC: any fixed day will do
DELTA_COLUMNS = (
    "market_ticker",
    "sid",
    "seq",
    "side",
    "price",
    "delta",
    "received_at",
    "exchange_lag_ms",
    "sent_lag_ms",
    "landing_segment",
    "landing_offset",
)


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    folder = ctx.folder("books")
    landing = folder / "k.landing"
    db = folder / "k.duckdb"
    ctx.display.status(
        f"landing a day of {plan.books_deltas:,} deltas over {plan.books_markets} markets"
    )
    t0 = time.monotonic()
    day = write_day(
        landing,
        markets=plan.books_markets,
        deltas=plan.books_deltas,
        start_ns=DAY_START_NS,
        seed=ctx.seed,
    )
    landed_s = time.monotonic() - t0
    ctx.display.status("loading the day through the writer")
    owner = Owner(db, port=free_port())
    writer = Writer(owner, landing)
    try:
        t0 = time.monotonic()
        cpu0 = time.process_time()
        while writer.load_once():
            pass
        load_s = time.monotonic() - t0
        load_cpu_s = time.process_time() - cpu0
        con = owner.connection()
        stored = con.execute("SELECT count(*) FROM book_deltas_stored").fetchone()
        deltas = int(stored[0]) if stored else 0
        ctx.display.status("measuring bytes per delta")
        table_bytes = scratch_bytes(con, "book_deltas_stored", "*")
        keyframe_bytes = scratch_bytes(con, "book_keyframes", "*")
        keyframes = int(con.execute("SELECT count(*) FROM book_keyframes").fetchone()[0])
        snapshot_rows = int(con.execute("SELECT count(*) FROM book_snapshots").fetchone()[0])
        columns = {
            c: round(scratch_bytes(con, "book_deltas_stored", c) / deltas, 2) for c in DELTA_COLUMNS
        }
        ctx.display.status("asking for books at random times")
        with connect(db, read_only=True) as client:
            latencies = book_latencies(
                client, day.markets, day.start_ns, day.end_ns, plan.books_queries, ctx.seed
            )
        # the same books on the owner's own connection: the query without the client's hop
        direct = book_latencies(
            con, day.markets, day.start_ns, day.end_ns, plan.books_queries, ctx.seed
        )
    finally:
        writer.close()
    p50 = statistics.median(latencies)
    p99 = quantile(latencies, 0.99)
    return {
        "figures": {
            # keyframes are there for the deltas' sake: they count
            "books_bytes_per_delta": round((table_bytes + keyframe_bytes) / deltas, 2)
            if deltas
            else None,
            "books_book_at_p50_ms": round(p50, 1),
            "books_book_at_p99_ms": round(p99, 1),
            "books_deltas_per_s_writer": round(deltas / load_s) if load_s > 0 else None,
        },
        "details": {
            "markets": plan.books_markets,
            "deltas": deltas,
            "deltas_landed": day.deltas,
            "snapshots": snapshot_rows,
            "keyframes": keyframes,
            "bytes_per_delta_deltas_only": round(table_bytes / deltas, 2) if deltas else None,
            "bytes_per_delta_keyframes": round(keyframe_bytes / deltas, 2) if deltas else None,
            "day_hours": round((day.end_ns - day.start_ns) / 3.6e12, 2),
            "frame_bytes_per_delta": round(day.frame_bytes / max(1, day.deltas), 1),
            "bytes_per_delta_resolution": round(BLOCK / deltas, 3) if deltas else None,
            "bytes_per_delta_by_column": columns,
            "landing_s": round(landed_s, 1),
            "load_s": round(load_s, 1),
            "load_cpu_s": round(load_cpu_s, 1),
            # the rate per second of the writer's own CPU: what a busy machine does not change
            "deltas_per_cpu_s_writer": round(deltas / load_cpu_s) if load_cpu_s > 0 else None,
            "queries": len(latencies),
            "book_at_max_ms": round(max(latencies), 1),
            "book_at_direct_p50_ms": round(statistics.median(direct), 1),
            "book_at_direct_p99_ms": round(quantile(direct, 0.99), 1),
            "db_file_bytes": db.stat().st_size if db.exists() else None,
            "throughput_path": "writer (landing log of delta frames -> DuckDB)",
        },
    }


def book_latencies(
    con: Any, markets: list[str], start_ns: int, end_ns: int, queries: int, seed: int
) -> list[float]:
    """Milliseconds per `book_at` (levels and validity), random markets at random times."""
    rng = random.Random(seed)
    out: list[float] = []
    book_at(con, markets[0], _dt(end_ns))  # attach and warm up: not a measured query
    for _ in range(queries):
        ticker = rng.choice(markets)
        at = _dt(rng.randint(start_ns + 1_000_000_000, end_ns))
        t0 = time.perf_counter()
        book = book_at(con, ticker, at, depth=10)
        out.append((time.perf_counter() - t0) * 1000)
        if book.snapshot_at is None:
            raise RuntimeError(f"no book of {ticker} at {at}: the day was not loaded")
    return out


def _dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

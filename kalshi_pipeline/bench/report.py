"""The figures against their targets: the terminal table, the JSON and the README section.

`TARGETS` is the one list of what is measured, its target and how to judge it. The README section
between `<!-- bench:start -->` and `<!-- bench:end -->` is rewritten from a results JSON; nothing
else in the README is touched.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import psutil
from rich.table import Table

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


@dataclass(frozen=True)
class Target:
    key: str
    figure: str
    target: str
    unit: str
    check: Callable[[float, dict[str, Any]], bool] | None = None
    show: Callable[[float, dict[str, Any]], str] | None = None


def _n(v: float, _r: dict[str, Any]) -> str:
    return f"{v:,.0f}"


TARGETS: tuple[Target, ...] = (
    Target(
        "throughput_ticks_per_s",
        "stream throughput into DuckDB (firehose, websocket mode)",
        "≥ 100,000 ticks/s",
        "ticks/s",
        lambda v, r: v >= 100_000,
        lambda v, r: f"{v:,.0f} ticks/s",
    ),
    Target(
        "throughput_vs_limit",
        "throughput against the loopback limit (receive and decode only)",
        "≥ 0.8 x the limit",
        "ratio",
        lambda v, r: v >= 0.8,
        lambda v, r: f"{v:.2f} x {r.get('loopback_limit_msgs_per_s') or 0:,.0f} msgs/s",
    ),
    Target(
        "latency_p50_ms",
        "tick to stored, p50, at 1,000 ticks/s",
        "≤ 150 ms",
        "ms",
        lambda v, r: v <= 150,
        lambda v, r: f"{v:,.0f} ms",
    ),
    Target(
        "latency_p99_ms",
        "tick to stored, p99, at 1,000 ticks/s",
        "≤ 500 ms",
        "ms",
        lambda v, r: v <= 500,
        lambda v, r: f"{v:,.0f} ms",
    ),
    Target(
        "visible_p99_ms",
        "tick to visible to a reader process polling, at 1,000 ticks/s, p99 (and p50)",
        "p99 ≤ 150 ms, p50 ≤ 50 ms",
        "ms",
        lambda v, r: v <= 150 and (r.get("visible_p50_ms") or math.inf) <= 50,
        lambda v, r: f"{v:,.0f} ms (p50 {r.get('visible_p50_ms') or 0:,.0f} ms)",
    ),
    Target(
        "bytes_per_tick",
        "storage per tick in DuckDB (the largest run of simulated ticks)",
        "≤ 16 bytes",
        "bytes",
        lambda v, r: v <= 16,
        lambda v, r: (
            f"{v:.1f} bytes ({_d(r, 'memory', 'ticks_stored'):,.0f} ticks over "
            f"{_d(r, 'memory', 'markets'):,.0f} markets, ± "
            f"{_d(r, 'memory', 'bytes_per_tick_resolution'):.1f}; both feeds over "
            f"{_d(r, 'storage', 'markets'):,.0f} markets: "
            f"{r.get('bytes_per_tick_storage_run') or 0:.1f} ± "
            f"{_d(r, 'storage', 'bytes_per_tick_resolution'):.1f})"
        ),
    ),
    Target(
        "storage_ratio_naive_http_vs_ws",
        "every market on every poll against WebSocket, bytes per hour",
        "reported",
        "ratio",
        None,
        lambda v, r: (
            f"{v:,.1f} x ({_mb(r.get('storage_naive_http_bytes_per_hour'))} against "
            f"{_mb(r.get('storage_ws_bytes_per_hour'))} per hour)"
        ),
    ),
    Target(
        "storage_ratio_http_changes_vs_ws",
        "change-only polling against WebSocket, bytes per hour",
        "reported",
        "ratio",
        None,
        lambda v, r: f"{v:.2f} x ({_mb(r.get('storage_http_changes_bytes_per_hour'))} per hour)",
    ),
    Target(
        "writer_vs_seed_pattern",
        "our writer against the predecessor's per-message SQLite commit",
        "≥ 100 x",
        "ratio",
        lambda v, r: v >= 100,
        lambda v, r: (
            f"{v:,.0f} x ({r.get('writer_only_ticks_per_s') or 0:,.0f} against "
            f"{r.get('seed_pattern_ticks_per_s') or 0:,.0f} ticks/s)"
        ),
    ),
    Target(
        "cpu_share_at_200_tps",
        "CPU at 200 ticks/s over 25,000 markets",
        "≤ 5 % of a core",
        "share of one core",
        lambda v, r: v <= 0.05,
        lambda v, r: (
            f"{v * 100:.1f} % of a core ({_d(r, 'cpu', 'ticks_per_s_stored'):,.0f} ticks/s "
            f"over {_d(r, 'cpu', 'markets'):,.0f} markets)"
        ),
    ),
    Target(
        "cpu_floor_share",
        "this machine's floor for it: a process that only commits 50 rows to DuckDB 4 times "
        "a second",
        "reported",
        "share of one core",
        None,
        lambda v, r: f"{v * 100:.1f} % of a core",
    ),
    Target(
        "peak_rss_mb",
        "peak RSS at 50,000 ticks/s offered",
        "≤ 250 MB",
        "MB",
        lambda v, r: v <= 250,
        lambda v, r: (
            f"{v:,.0f} MB (stored {r.get('memory_stored_ticks_per_s') or 0:,.0f} of "
            f"{r.get('memory_offered_ticks_per_s') or 0:,.0f} ticks/s)"
        ),
    ),
    Target(
        "peak_rss_locked_mb",
        "peak RSS while another process holds the database",
        "bounded (≤ 250 MB)",
        "MB",
        lambda v, r: v <= 250,
        lambda v, r: (
            f"{v:,.0f} MB (held {_d(r, 'locked', 'hold_s'):,.0f} s at "
            f"{_d(r, 'locked', 'rate'):,.0f} ticks/s; catching up after: "
            f"{_d(r, 'locked', 'peak_rss_catching_up_mb'):,.0f} MB in "
            f"{_d(r, 'locked', 'catch_up_s'):,.0f} s)"
        ),
    ),
    Target(
        "analysts_pace",
        "five analyst clients querying the live stream: stored rate vs without them",
        "keeps its pace (≥ 0.95 x), 0 client errors, 0 stored twice",
        "ratio",
        lambda v, r: (
            v >= 0.95 and r.get("analysts_errors") == 0 and r.get("analysts_duplicates") == 0
        ),
        lambda v, r: (
            f"{v:.2f} x ({_d(r, 'analysts', 'rate'):,.0f} ticks/s offered; query p99 "
            f"{r.get('analysts_query_p99_ms') or 0:,.0f} ms; "
            f"{r.get('analysts_errors') or 0:,.0f} errors)"
        ),
    ),
    Target(
        "books_bytes_per_delta",
        "order books: storage per delta in DuckDB (a day of deltas)",
        "≤ 12 bytes",
        "bytes",
        lambda v, r: v <= 12,
        lambda v, r: (
            f"{v:.1f} bytes ({_d(r, 'books', 'deltas'):,.0f} deltas over "
            f"{_d(r, 'books', 'markets'):,.0f} markets, ± "
            f"{_d(r, 'books', 'bytes_per_delta_resolution'):.2f})"
        ),
    ),
    Target(
        "books_book_at_p99_ms",
        "order books: the book of a market at time T over a day of deltas, p99",
        "≤ 50 ms",
        "ms",
        lambda v, r: v <= 50,
        lambda v, r: (
            f"{v:,.1f} ms (p50 {r.get('books_book_at_p50_ms') or 0:,.1f} ms; "
            f"{_d(r, 'books', 'queries'):,.0f} books, depth 10, through the client)"
        ),
    ),
    Target(
        "books_deltas_per_s_writer",
        "order books: deltas stored per second (the writer's path, from a landing log of delta "
        "frames; the engine's receive loop is not in it)",
        "reported (the engine's rate, against the limit, is the next row)",
        "deltas/s",
        None,
        lambda v, r: (
            f"{v:,.0f} deltas/s ({_d(r, 'books', 'deltas_per_cpu_s_writer'):,.0f} per second of "
            "the writer's CPU)"
        ),
    ),
    Target(
        "books_deltas_vs_limit",
        "order books: deltas stored per second through the engine (order-book firehose, "
        "websocket mode) against the loopback limit for delta frames (receive and decode only)",
        "≥ 0.8 x the limit",
        "ratio",
        lambda v, r: v >= 0.8,
        lambda v, r: (
            f"{v:.2f} x {r.get('books_loopback_limit_deltas_per_s') or 0:,.0f} deltas/s "
            f"({r.get('books_deltas_per_s_engine') or 0:,.0f} deltas/s stored; engine CPU "
            f"{_d(r, 'books_throughput', 'engine_cpu_us_per_delta'):,.1f} µs per delta)"
        ),
    ),
    Target(
        "books_check_equal",
        "books check: order books rebuilt from the warehouse at random moments, equal to the "
        "exchange's own (outside recorded gaps)",
        "every moment",
        "moments",
        lambda v, r: v == r.get("books_check_moments"),
        lambda v, r: (
            f"{v:,.0f} of {r.get('books_check_moments') or 0:,.0f} "
            f"({_d(r, 'books_check', 'markets'):,.0f} markets, "
            f"{_d(r, 'books_check', 'run_s') / 60:,.0f} min)"
        ),
    ),
    Target(
        "books_check_gaps_unrecorded",
        "books check: frames the exchange dropped that no `sequence_gap` recorded",
        "0",
        "frames",
        lambda v, r: v == 0,
        lambda v, r: f"{v:,.0f} of {r.get('books_check_gaps_injected') or 0:,.0f} dropped",
    ),
    Target(
        "books_check_trades_missing",
        "books check: the exchange's trades missing from the warehouse; trades stored that it "
        "never made, or twice",
        "0; 0",
        "trades",
        lambda v, r: v == 0 and r.get("books_check_trades_extra") == 0,
        lambda v, r: (
            f"{v:,.0f}; {r.get('books_check_trades_extra') or 0:,.0f} "
            f"(of {r.get('books_check_trades') or 0:,.0f} trades)"
        ),
    ),
    Target(
        "books_check_replay_differences",
        "books check: rows of books and trades that differ after replaying the landing log",
        "0",
        "rows",
        lambda v, r: v == 0,
        _n,
    ),
    Target(
        "chaos_lost",
        "chaos: ticks sent while connected and never stored",
        "0",
        "ticks",
        lambda v, r: v == 0,
        lambda v, r: (
            f"{v:,.0f} ({r.get('chaos_lost_at_kills') or 0:,.0f} in flight at a SIGKILL; "
            f"{r.get('chaos_lost_after_receipt') or 0:,.0f} after receipt)"
        ),
    ),
    Target(
        "chaos_duplicates",
        "chaos: frames stored twice",
        "0",
        "frames",
        lambda v, r: v == 0,
        _n,
    ),
    Target(
        "chaos_fallback_s",
        "chaos: seconds on HTTP fallback; recoveries of the socket",
        "reported",
        "s",
        None,
        lambda v, r: f"{v:,.0f} s; {r.get('chaos_recoveries') or 0:,.0f} recoveries",
    ),
    Target(
        "chaos_handover_gap_max_s",
        "chaos: seconds without any live feed per handover (max; total); handovers done",
        "0 s, none failed",
        "s",
        lambda v, r: v == 0 and r.get("chaos_handovers_failed") == 0,
        lambda v, r: (
            f"{v:,.1f} s ({r.get('chaos_handover_gap_total_s') or 0:,.1f} s in all); "
            f"{r.get('chaos_handovers') or 0:,.0f} done, "
            f"{r.get('chaos_handovers_failed') or 0:,.0f} failed"
        ),
    ),
    Target(
        "chaos_kill_gap_max_s",
        "chaos: seconds without any live feed per SIGKILL, to the next live feed (max; total)",
        "reported",
        "s",
        None,
        lambda v, r: (
            f"{v:,.1f} s ({r.get('chaos_kill_gap_total_s') or 0:,.1f} s in all over "
            f"{r.get('chaos_kills') or 0:,.0f} kills)"
        ),
    ),
    Target(
        "chaos_coverage",
        "chaos: coverage over the run (some feed live or degraded)",
        "reported",
        "share",
        None,
        lambda v, r: f"{math.floor(v * 10_000) / 100:.2f} %",  # rounded down: a gap shows
    ),
)
KEYS = [t.key for t in TARGETS] + [
    "analysts_query_p99_ms",
    "analysts_errors",
    "analysts_duplicates",
    "loopback_limit_msgs_per_s",
    "seed_pattern_ticks_per_s",
    "writer_only_ticks_per_s",
    "engine_vs_seed_pattern",
    "peak_rss_firehose_mb",
    "bytes_per_tick_storage_run",
    "visible_p50_ms",
    "storage_ws_bytes_per_hour",
    "storage_naive_http_bytes_per_hour",
    "storage_http_changes_bytes_per_hour",
    "memory_offered_ticks_per_s",
    "memory_stored_ticks_per_s",
    "chaos_recoveries",
    "chaos_lost_at_kills",
    "chaos_lost_after_receipt",
    "chaos_handovers",
    "chaos_handovers_failed",
    "chaos_handover_gap_total_s",
    "chaos_kills",
    "chaos_kill_gap_total_s",
    "scaling",
    "compression",
    "books_book_at_p50_ms",
    "books_deltas_per_s_engine",
    "books_loopback_limit_deltas_per_s",
    "books_check_moments",
    "books_check_gaps_injected",
    "books_check_trades",
    "books_check_trades_extra",
]


def _d(results: dict[str, Any], scenario: str, key: str) -> float:
    """A figure from a scenario's details (0 when absent), for the measured column."""
    value = (results.get("details") or {}).get(scenario, {}).get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def _mb(v: Any) -> str:
    return "?" if v is None else f"{v / 1e6:,.1f} MB"


def verdict(t: Target, results: dict[str, Any]) -> str:
    v = results.get(t.key)
    if v is None:
        return "not run"
    if t.check is None:
        return "reported"
    return "met" if t.check(v, results) else "missed"


def shown(t: Target, results: dict[str, Any]) -> str:
    v = results.get(t.key)
    if v is None:
        return "-"
    return t.show(v, results) if t.show else str(v)


def judge(results: dict[str, Any]) -> dict[str, str]:
    return {t.key: verdict(t, results) for t in TARGETS}


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------- terminal


def table(results: dict[str, Any]) -> Table:
    t = Table(title="kalshi-pipeline bench", title_justify="left")
    t.add_column("figure")
    t.add_column("target")
    t.add_column("measured", justify="right")
    t.add_column("result")
    for target in TARGETS:
        v = verdict(target, results)
        style = {"met": "green", "missed": "bold red"}.get(v, "dim")
        t.add_row(target.figure, target.target, shown(target, results), f"[{style}]{v}[/]")
    return t


def scaling_table(results: dict[str, Any]) -> Table | None:
    rows = results.get("scaling")
    if not rows:
        return None
    t = Table(title="how cost grows with the number of markets", title_justify="left")
    for col in ("markets", "ticks/s", "peak RSS ws / http", "HTTP pass", "pages", "pages / 20"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(*_scaling_cells(r))
    return t


def _scaling_cells(r: dict[str, Any]) -> list[str]:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else fmt.format(v)

    return [
        f"{r['markets']:,}",
        f(r.get("ticks_per_s"), "{:,.0f}") + ("" if r.get("complete", True) else " (partial)"),
        f(r.get("peak_rss_mb"), "{:,.0f} MB") + f(r.get("http_peak_rss_mb"), " / {:,.0f} MB"),
        f(r.get("http_pass_s"), "{:.2f} s"),
        f(r.get("http_pages"), "{:,}"),
        f(r.get("http_min_pass_s"), "{:.2f} s"),
    ]


def compression_table(results: dict[str, Any]) -> Table | None:
    rows = results.get("compression")
    if not rows:
        return None
    t = Table(title="WebSocket compression (permessage-deflate), firehose", title_justify="left")
    for col in COMPRESSION_COLUMNS:
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(*_compression_cells(r))
    return t


COMPRESSION_COLUMNS = (
    "compression",
    "wire bytes / tick",
    "frame bytes / tick",
    "client CPU µs / tick",
    "engine CPU µs / tick",
    "engine ticks/s",
)


def _compression_cells(r: dict[str, Any]) -> list[str]:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else fmt.format(v)

    negotiated = "" if r.get("negotiated") == (r["compression"] == "on") else " (not negotiated)"
    return [
        r["compression"] + negotiated,
        f(r.get("wire_bytes_per_tick"), "{:,.1f}"),
        f(r.get("frame_bytes_per_tick"), "{:,.1f}"),
        f(r.get("client_cpu_us_per_tick"), "{:,.1f}"),
        f(r.get("engine_cpu_us_per_tick"), "{:,.1f}"),
        f(r.get("engine_ticks_per_s"), "{:,.0f}"),
    ]


# --------------------------------------------------------------------------- README


def readme_section(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    run = results.get("run", {})
    lines = [
        f"Last run: {results.get('date', '?')}, `{run.get('command', 'kalshi-pipeline bench')}` "
        f"({run.get('plan', '?')}, {run.get('duration_s', 0) / 60:.1f} min), on "
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('ram_gb', '?')} GB RAM, "
        f"{m.get('os', '?')}, Python {m.get('python', '?')}, DuckDB {m.get('duckdb', '?')} "
        f"(load average at start {', '.join(str(x) for x in m.get('load_average_at_start', []))}).",
        "",
        "| figure | target | measured | result |",
        "| --- | --- | --- | --- |",
    ]
    for t in TARGETS:
        v = verdict(t, results)
        mark = f"**{v}**" if v == "missed" else v
        lines.append(f"| {t.figure} | {t.target} | {shown(t, results)} | {mark} |")
    rows = results.get("scaling")
    if rows:
        lines += [
            "",
            "How cost grows with the number of markets (firehose through the engine; then HTTP "
            'polling passes over every market at 20 requests/s; "partial": not every frame was '
            "stored within the wait, so the rate is what was stored by then):",
            "",
            "| markets | ticks/s | peak RSS ws / http | HTTP pass | pages | pages / 20 per s |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += ["| " + " | ".join(_scaling_cells(r)) + " |" for r in rows]
    rows = results.get("compression")
    if rows:
        lines += [
            "",
            "WebSocket compression (the firehose with `websocket_compression` off and on; bytes "
            "on the client's socket, CPU of the bare client and of the engine per tick stored):",
            "",
            "| " + " | ".join(COMPRESSION_COLUMNS) + " |",
            "| --- |" + " ---: |" * (len(COMPRESSION_COLUMNS) - 1),
        ]
        lines += ["| " + " | ".join(_compression_cells(r)) + " |" for r in rows]
    notes = results.get("notes") or []
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    lines += [
        "",
        "Regenerated by `kalshi-pipeline bench` (a full run); full figures in "
        f"`{results.get('run', {}).get('output', 'benchmarks/results/latest.json')}`.",
    ]
    return "\n".join(lines)


def update_readme(readme: Path, results: dict[str, Any]) -> bool:
    """Rewrite the region between the markers; False when the README or a marker is missing."""
    if not readme.exists():
        return False
    text = readme.read_text()
    if text.count(README_START) != 1 or text.count(README_END) != 1:
        return False
    head, rest = text.split(README_START, 1)
    _old, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{readme_section(results)}\n{README_END}{tail}"
    tmp = readme.with_name(readme.name + ".bench.tmp")
    tmp.write_text(new)
    os.replace(tmp, readme)
    return True

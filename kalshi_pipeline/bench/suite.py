"""Runs the chosen scenarios in order, collects their figures, writes the results JSON.

A scenario that fails is recorded with its error and the run goes on; its figures stay null.
Whatever happens (an error, Ctrl-C, SIGTERM), every process a scenario started is stopped
before this returns.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kalshi_pipeline.bench import (
    analysts,
    bookcheck,
    books,
    bookthroughput,
    chaos,
    compression,
    latency,
    resources,
    scaling,
    storage,
    throughput,
)
from kalshi_pipeline.bench.context import Context
from kalshi_pipeline.bench.display import Display
from kalshi_pipeline.bench.plan import Plan
from kalshi_pipeline.bench.procs import Reaper
from kalshi_pipeline.bench.report import KEYS, judge, machine, now_utc

Scenario = Callable[[Context], dict[str, Any]]
RUNNERS: dict[str, Scenario] = {
    "throughput": throughput.run,
    "latency": latency.run,
    "storage": storage.run,
    "cpu": resources.cpu,
    "memory": resources.memory,
    "locked": resources.locked,
    "analysts": analysts.run,
    "scaling": scaling.run,
    "compression": compression.run,
    "books": books.run,
    "books_throughput": bookthroughput.run,
    "books_check": bookcheck.run,
    "chaos": chaos.run,
}


def expected_seconds(name: str, plan: Plan) -> float:
    """About how long a scenario takes, for the progress bars."""
    return {
        "throughput": 15 + plan.throughput_frames / 25_000,
        "latency": 12 + plan.latency_s,
        "storage": 15 + plan.storage_s,
        "cpu": 10 + plan.cpu_warmup_s + plan.cpu_s + plan.cpu_floor_s,
        "memory": 15 + plan.memory_s,
        "locked": 20 + plan.locked_hold_s * 1.5,
        "analysts": 20 + plan.analysts_s * 2,
        "scaling": sum(15 + plan.scaling_frames / 25_000 + m / 4_000 for m in plan.scaling_markets),
        "compression": 2 * (20 + plan.compression_frames / 10_000),
        "books": 10 + plan.books_deltas / 20_000 + plan.books_queries / 20,
        "books_throughput": 15 + plan.books_throughput_frames / 15_000,
        "books_check": 40 + plan.books_check_s,
        "chaos": 25 + plan.chaos_s,
    }[name]


def run(
    plan: Plan,
    scenarios: list[str],
    display: Display,
    *,
    seed: int = 7,
    profile_dir: Path | None = None,
    keep: bool = False,
    command: str = "kalshi-pipeline bench",
) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {k: None for k in KEYS}
    results.update(
        {
            "date": now_utc(),
            "machine": machine(),
            "run": {"command": command, "plan": plan.name, "scenarios": scenarios},
            "plan": plan.describe(),
            "details": {},
            "errors": {},
            "notes": [],
        }
    )
    work = Path(tempfile.mkdtemp(prefix="kalshi-bench-"))
    try:
        ctx = Context(plan=plan, work=work, display=display, seed=seed, profile_dir=profile_dir)
        for name in scenarios:
            with display.scenario(name, expected_seconds(name, plan)):
                t0 = time.monotonic()
                try:
                    out = RUNNERS[name](ctx)
                except Exception as exc:  # recorded; the other scenarios still run
                    results["errors"][name] = f"{type(exc).__name__}: {exc}"
                    results["details"][name] = {"traceback": traceback.format_exc()[-4000:]}
                    display.failed(f"{type(exc).__name__}: {exc}")
                    continue
                finally:
                    Reaper.cleanup()
                results.update(out["figures"])
                results["details"][name] = {
                    **out["details"],
                    "seconds": round(time.monotonic() - t0, 1),
                }
    finally:
        Reaper.cleanup()
        if keep:
            display.note(f"scratch folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["run"]["duration_s"] = round(time.monotonic() - started, 1)
    results["targets"] = judge(results)
    results["notes"] = notes(results)
    return results


def notes(results: dict[str, Any]) -> list[str]:
    out = []
    if results["run"]["plan"] != "full":
        out.append(
            f"A `{results['run']['plan']}` run: shorter and smaller than the full run, figures "
            "indicative only."
        )
    load = results["machine"].get("load_average_at_start") or [0]
    if load[0] > 0.5 * (results["machine"].get("cores") or 1):
        out.append(
            f"The machine was busy when the run started (load average {load[0]}); the "
            "simulator and the engine share its cores, so rates are lower bounds."
        )
    if results.get("scaling"):
        out.append(
            "The firehose moves at most 1,000 markets whatever the universe; the other markets "
            "are listed, reconciled over REST and held as metadata."
        )
    columns = results.get("details", {}).get("memory", {}).get("bytes_per_tick_by_column")
    if columns:
        res = results["details"]["memory"].get("bytes_per_tick_resolution") or 0
        parts = ", ".join(f"{c} {b:.1f}" for c, b in sorted(columns.items(), key=lambda cb: -cb[1]))
        out.append(
            "Where a tick's bytes go (the memory run's ticks, each column stored on its own, "
            f"bytes per tick ± {res:.1f} each): {parts}."
        )
    floor = results.get("cpu_floor_share")
    if isinstance(floor, int | float):
        per_commit = results["details"]["cpu"]["floor"].get("cpu_ms_per_commit") or 0
        out.append(
            "CPU at 200 ticks/s, against this machine's floor: a process that does nothing but "
            f"commit 50 rows to DuckDB 4 times a second takes {floor * 100:.1f} % of a core "
            f"here ({per_commit:.1f} ms of CPU a commit)."
            + (" The 5 % target is under that floor on this machine." if floor >= 0.05 else "")
        )
    for name, err in results.get("errors", {}).items():
        out.append(f"Scenario `{name}` failed: {err.splitlines()[0][:200]}")
    return out


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    tmp.replace(path)

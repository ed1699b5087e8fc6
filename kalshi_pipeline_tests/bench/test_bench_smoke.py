"""`kalshi-pipeline bench` at a tiny scale: the command runs every scenario and writes its JSON.

That the figures are there is checked, and that they are sane (chaos made a handover and a kill,
a kill shows as a gap), never how good they are: nothing in `make test` may depend on timing. The
real measurements are `kalshi-pipeline bench` (and `--quick`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from numbers import Number
from pathlib import Path

import pytest

from kalshi_pipeline.bench.plan import SCENARIOS
from kalshi_pipeline.warehouse.loads import TICK_COLUMNS

FIGURES = (
    "throughput_ticks_per_s",
    "loopback_limit_msgs_per_s",
    "throughput_vs_limit",
    "latency_p50_ms",
    "latency_p99_ms",
    "visible_p99_ms",
    "bytes_per_tick",
    "storage_ratio_naive_http_vs_ws",
    "seed_pattern_ticks_per_s",
    "writer_vs_seed_pattern",
    "cpu_share_at_200_tps",
    "cpu_floor_share",
    "peak_rss_mb",
    "peak_rss_locked_mb",
    "analysts_pace",
    "analysts_errors",
    "chaos_lost",
    "chaos_duplicates",
    "chaos_fallback_s",
    "chaos_recoveries",
    "chaos_coverage",
    "chaos_handovers",
    "chaos_handovers_failed",
    "chaos_handover_gap_max_s",
    "chaos_handover_gap_total_s",
    "chaos_kills",
    "chaos_kill_gap_max_s",
    "chaos_kill_gap_total_s",
    "books_bytes_per_delta",
    "books_book_at_p50_ms",
    "books_book_at_p99_ms",
    "books_deltas_per_s_writer",
    "books_deltas_per_s_engine",
    "books_loopback_limit_deltas_per_s",
    "books_deltas_vs_limit",
)


@pytest.mark.timeout(330)
def test_bench_command_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "kalshi_pipeline.bench",
            "--quick",
            "--scenarios",  # every scenario but the books check, which has a test of its own
            ",".join(s for s in SCENARIOS if s != "books_check"),
            "--scale",
            "0.01",
            "--no-readme",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=320,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads(out.read_text())
    missing = [k for k in FIGURES if not isinstance(results.get(k), Number)]
    assert not missing, f"figures without a number: {missing}; errors: {results['errors']}"
    assert results["scaling"] and all(
        isinstance(row["ticks_per_s"], Number) and isinstance(row["http_pass_s"], Number)
        for row in results["scaling"]
    )
    assert [row["compression"] for row in results["compression"]] == ["off", "on"]
    assert [row["negotiated"] for row in results["compression"]] == [False, True]
    assert all(
        isinstance(row[k], Number)
        for row in results["compression"]
        for k in ("wire_bytes_per_tick", "client_cpu_us_per_tick", "engine_cpu_us_per_tick")
    )
    assert {"cpu", "cores", "ram_gb", "python", "duckdb"} <= set(results["machine"])
    # where a tick's bytes go: every column of `ticks`, measured alone, adding up to the whole
    # within a block for each
    memory = results["details"]["memory"]
    columns = memory["bytes_per_tick_by_column"]
    assert set(columns) == set(TICK_COLUMNS)
    slack = memory["bytes_per_tick_resolution"] * (len(columns) + 1)
    assert abs(sum(columns.values()) - results["bytes_per_tick"]) <= slack, columns
    assert any("Where a tick's bytes go" in n for n in results["notes"])
    # the CPU figure comes with this machine's floor for it
    assert results["details"]["cpu"]["floor"]["commits"] > 0
    assert any("this machine's floor" in n for n in results["notes"])
    # after the database was held, the stream got back to the live edge
    assert results["details"]["locked"]["caught_up"] is True
    # the order-book firehose: every delta reached the bare client, and the engine stored each
    # exactly once
    deltas = results["details"]["books_throughput"]
    assert deltas["loopback"]["frames"] == deltas["frames"]
    assert deltas["loopback"]["decode_errors"] == 0
    assert deltas["engine_deltas_stored"] == deltas["frames"]
    assert deltas["engine_distinct_delta_frames"] == deltas["frames"]
    # chaos, however short, hands over at least once and kills at least once
    chaos = results["details"]["chaos"]
    assert results["chaos_handovers"] >= 1, chaos["handover_log"]
    assert results["chaos_handovers"] + results["chaos_handovers_failed"] == len(
        chaos["handover_log"]
    )
    assert all(h["outcome"] is not None for h in chaos["handover_log"])
    assert 0 <= results["chaos_handover_gap_max_s"] <= results["chaos_handover_gap_total_s"]
    assert results["chaos_kills"] >= 1
    # a SIGKILLed engine leaves a gap until its restart is live again
    assert 0 < results["chaos_kill_gap_max_s"] <= results["chaos_kill_gap_total_s"]
    assert 0 < results["chaos_coverage"] < 1
    assert "kalshi-pipeline bench" in run.stdout  # the table was printed

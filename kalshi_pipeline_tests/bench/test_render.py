"""`kalshi-pipeline bench --render`: an earlier run's results, judged against today's targets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_render_judges_an_earlier_run_against_the_targets_as_they_stand(tmp_path: Path) -> None:
    earlier = json.loads((ROOT / "benchmarks" / "results" / "latest.json").read_text())
    # a run judged when the visible-tick target was looser: p50 52 ms was "met" then
    earlier["visible_p50_ms"], earlier["visible_p99_ms"] = 52.0, 95.0
    earlier["targets"]["visible_p99_ms"] = "met"
    source = tmp_path / "earlier.json"
    source.write_text(json.dumps(earlier))
    out = tmp_path / "rejudged.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "kalshi_pipeline.bench",
            "--render",
            str(source),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "kalshi-pipeline bench" in run.stdout  # the table was printed
    rejudged = json.loads(out.read_text())
    assert rejudged["targets"]["visible_p99_ms"] == "missed"
    assert rejudged["visible_p50_ms"] == 52.0  # the figures themselves as measured
    assert rejudged["throughput_ticks_per_s"] == earlier["throughput_ticks_per_s"]

"""What `make run` shows of `dagster dev`: stack traces of normal operation folded to one line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kalshi_pipeline.dev_output import FOLDED, fold_stack_traces, pump
from kalshi_pipeline_tests.defs.conftest import stream_run_config


def _fold(text: str) -> str:
    return b"".join(fold_stack_traces(io.BytesIO(text.encode()).readlines())).decode()


# A failed run, in a process of its own: its stderr is what `dagster dev` shows, with nothing
# from other tests' threads mixed in. Its step's output is not captured: Dagster's capture
# copies it back to stderr through a `tail` process that, on a loaded machine, can be stopped
# before it copied the step's last lines (the STEP_FAILURE block went missing once that way).
_FAILED_RUN = """
import json, sys
import dagster as dg
from kalshi_pipeline.definitions import defs
NO_CAPTURE = {
    "module": "dagster._core.storage.noop_compute_log_manager",
    "class": "NoOpComputeLogManager",
}
with dg.instance_for_test(overrides={"compute_logs": NO_CAPTURE}) as instance:
    result = defs.resolve_job_def("kalshi_ingest").execute_in_process(
        run_config=json.loads(sys.argv[1]), instance=instance, raise_on_error=False
    )
sys.exit(0 if not result.success else 3)
"""


def test_a_failed_runs_output_keeps_its_reason_and_drops_its_stack(
    sim_factory: Any, tmp_path: Path
) -> None:
    # no key, key file or URL from elsewhere: demo has no credentials
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KALSHI_") or k in ("KALSHI_HOME", "KALSHI_WAREHOUSE_PORT")
    }
    sim = sim_factory(markets=20, rate=5, with_ledger=False)
    config = stream_run_config(sim, tmp_path / "k.duckdb", feed={"environment": "demo"})
    run = subprocess.run(
        [sys.executable, "-c", _FAILED_RUN, json.dumps(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]  # the run failed, as it should
    raw = run.stderr
    assert "Stack Trace:" in raw, raw[-3000:]  # what Dagster prints for every failure event
    shown = _fold(raw)
    assert "Stack Trace:" not in shown and '  File "' not in shown, shown[-3000:]
    assert "STEP_FAILURE" in shown and "RUN_FAILURE" in shown, shown[-3000:]
    assert "KALSHI_ENV=demo needs credentials" in shown, shown[-3000:]  # the message stays
    assert FOLDED.decode() in shown
    assert len(shown.splitlines()) < len(raw.splitlines()) - 20


def test_a_python_traceback_keeps_its_last_line_and_the_lines_after_it() -> None:
    text = (
        "before\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "    boom()\n"
        "    ^^^^^^\n"
        "ValueError: the message a user needs\n"
        "after\n"
    )
    assert _fold(text) == (
        "before\n" + FOLDED.decode() + "ValueError: the message a user needs\nafter\n"
    )


def test_output_of_a_real_process_passes_through_the_pump() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "print('up', flush=True); raise SystemExit(int('x'))"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    read, write = os.pipe()
    with os.fdopen(write, "wb") as sink:
        assert child.stdout is not None
        thread = pump(child.stdout, sink)
        child.wait(timeout=30)
        thread.join(timeout=30)
    with os.fdopen(read, "rb") as out:
        shown = out.read().decode()
    assert shown.startswith("up\n")
    assert "ValueError: invalid literal for int() with base 10: 'x'" in shown
    assert '  File "' not in shown

"""The delta loopback client against a simulator without an order-book firehose: it says so and
how to start one, rather than waiting for frames that never come."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kalshi_pipeline.kalshi.devkey import ensure_dev_key
from kalshi_pipeline.simulator.process import SimulatorProcess


def test_bookloop_without_a_book_firehose_names_the_flag(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ensure_dev_key(home)
    env = {**os.environ, "KALSHI_HOME": str(home)}
    with SimulatorProcess(markets=50, rate=0, seed=3, kalshi_home=home) as sim:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "kalshi_pipeline.bench.bookloop",
                sim.ws_url,
                sim.rest_url,
                "100",
                "--timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    assert run.returncode == 2
    assert "no KXSIMBOOK markets" in run.stderr
    assert "--book-firehose" in run.stderr

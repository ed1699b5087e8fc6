"""The chaos benchmark's handover step against the real simulator and real engine processes: a
successor that takes over ends its predecessor (exit 0, "handed over to ..."); one that cannot
connect, or a predecessor that does not let go in time, is recorded as a failed handover and the
predecessor streams on."""

from __future__ import annotations

import io
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from kalshi_pipeline.bench import chaos
from kalshi_pipeline.bench.context import Context, free_port
from kalshi_pipeline.bench.display import Display
from kalshi_pipeline.bench.plan import QUICK
from kalshi_pipeline.bench.procs import EngineProcess, Reaper
from kalshi_pipeline_tests.helpers import wait_for


def settle(handover: chaos.Handover) -> EngineProcess:
    """Poll the handover as the chaos loop does until its outcome is known."""
    return wait_for(
        lambda: handover.check(time.monotonic()), timeout=150, what="the handover's outcome"
    )


def stores_on(engine: EngineProcess) -> None:
    before = int(engine.status.get("ticks_stored_ws", 0))
    wait_for(
        lambda: engine.alive() and int(engine.status.get("ticks_stored_ws", 0)) > before,
        timeout=60,
        what="the predecessor storing more ticks",
    )


@pytest.mark.timeout(420)
def test_handover_outcomes(tmp_path: Path) -> None:
    ctx = Context(plan=QUICK, work=tmp_path, display=Display(Console(file=io.StringIO())))
    db = tmp_path / "chaos" / "k.duckdb"
    db.parent.mkdir()
    try:
        with ctx.simulator(markets=50, rate=50.0) as sim:

            def start(name: str, ws_url: str | None = None, **config: Any) -> EngineProcess:
                feed = SimpleNamespace(rest_url=sim.rest_url, ws_url=ws_url or sim.ws_url)
                return ctx.engine(
                    name,
                    feed,  # type: ignore[arg-type]
                    db,
                    config={**chaos.ENGINE_CONFIG, **config},
                    status_every_s=0.5,
                    sample_every_s=1.0,
                )

            first = start("first")
            ctx.settle(first, 120, "first")

            # a successor whose socket cannot connect gives up; the running engine goes on
            nowhere = f"ws://127.0.0.1:{free_port()}/trade-api/ws/v2"
            h = chaos.Handover(
                first, start("unreachable", nowhere, handover_timeout_s=3.0), chaos.now_ms(), 0.0
            )
            h.deadline = time.monotonic() + 120
            assert settle(h) is first
            assert h.outcome is not None and h.outcome.startswith("the successor exited with 1")
            assert not h.done and h.ended_ms is not None
            stores_on(first)

            # a predecessor still running at the bench's deadline: the successor is stopped
            h = chaos.Handover(
                first, start("too-late", nowhere), chaos.now_ms(), time.monotonic() + 3.0
            )
            assert settle(h) is first
            assert h.outcome is not None and h.outcome.startswith("the predecessor still ran")
            assert not h.successor.alive()
            stores_on(first)

            # a successor that goes live: the predecessor ends by itself, exit 0
            h = chaos.Handover(first, start("second"), chaos.now_ms(), time.monotonic() + 120)
            second = settle(h)
            assert second is h.successor and h.done, h.outcome
            assert first.proc is not None and first.proc.returncode == 0
            assert str((first.stopped or {}).get("ended", "")).startswith("handed over to")
            assert "stream ended: handed over to" in first.log.read_text()
            stores_on(second)
            second.stop()
    finally:
        Reaper.cleanup()

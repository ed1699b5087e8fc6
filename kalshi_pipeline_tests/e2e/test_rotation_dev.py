"""End to end: rotation under a real `kalshi-pipeline dev`, driven through GraphQL.

A Launchpad run with a short `rotate_after_s` takes over from the sensor's run, then rotates: the
keep-alive sensor starts its successor and the run hands over to it, each old run ending SUCCESS
and naming its successor; every tick the simulator sent on any run's connection is stored exactly
once (the simulator's ledger), and coverage shows no moment without a live feed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kalshi_pipeline_tests.e2e.test_dagster_dev import Run, Stack, _tail, run_stack
from kalshi_pipeline_tests.helpers import down_intervals, wait_for
from kalshi_pipeline_tests.stream.support import settle_and_compare

pytestmark = pytest.mark.e2e

ROTATING_CONFIG = {"ops": {"stream_ticks": {"config": {"rotate_after_s": 10}}}}


@pytest.fixture
def ledgered(tmp_path: Path, sim_factory: Any) -> Iterator[tuple[Stack, Any]]:
    """`kalshi-pipeline dev` streaming from a simulator that keeps a ledger of what it sent."""
    sim = sim_factory(markets=200, rate=100)
    with run_stack(tmp_path, sim) as stack:
        yield stack, sim


def _successor_of(stack: Stack, run_id: str) -> Run | None:
    for run in stack.runs():
        if run.tags.get("kalshi/successor_of") == run_id and run.status == "STARTED":
            return run
    return None


@pytest.mark.timeout(420)
def test_rotation_hands_over_to_a_successor_the_sensor_starts_without_a_gap(
    ledgered: tuple[Stack, Any],
) -> None:
    stack, sim = ledgered
    wait_for(
        lambda: (
            "kalshi_pipeline is up" in stack.log.read_text(errors="replace")
            or stack.proc.poll() is not None
        ),
        timeout=150,
        what="kalshi-pipeline dev to be up",
    )
    assert stack.proc.poll() is None, _tail(stack.log)
    sensors_run = stack.wait_sensor_run(None, timeout=150)
    wait_for(
        lambda: stack.db.exists() and stack.ticks_since("websocket", 0) > 0,
        timeout=60,
        what="websocket ticks in DuckDB",
    )

    # A run that rotates after 10 s takes over; at rotation the sensor starts its successor.
    rotating = stack.launch(ROTATING_CONFIG)
    stack.handed_over(sensors_run.run_id, rotating)
    successor = wait_for(
        lambda: _successor_of(stack, rotating), timeout=120, what=f"the successor of {rotating}"
    )
    assert "kalshi/shard" not in successor.tags
    stack.handed_over(rotating, successor.run_id, timeout=120)
    overlap = stack.overlap_s("websocket", successor.run_id, time.time() - 120)
    assert overlap > 0, f"a gap of {-overlap:.1f}s at rotation"
    # every tick the simulator sent, on any of the runs' connections, stored exactly once (the
    # successor rotates in turn meanwhile: that is a handover too)
    expected, stored = settle_and_compare(sim, stack.db, None)
    doubled = sum(n - 1 for n in stored.values() if n > 1)
    missing = sum((expected - stored).values())
    assert (doubled, missing) == (0, 0), f"{doubled} stored twice, {missing} never stored"
    assert down_intervals(stack.db) == [], "coverage shows the feed down across the handovers"

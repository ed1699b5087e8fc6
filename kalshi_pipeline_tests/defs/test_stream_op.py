"""The stream op against a real simulator and a DuckDB file: termination, rotation, takeover,
credentials."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
from dagster._core.test_utils import create_run_for_test
from dagster._utils import send_interrupt

from kalshi_pipeline.definitions import defs
from kalshi_pipeline.defs.ingest.runs import worker_in
from kalshi_pipeline.stream.landing import list_segments
from kalshi_pipeline.warehouse import Warehouse
from kalshi_pipeline.warehouse.paths import landing_folder
from kalshi_pipeline.warehouse.status import landing_positions
from kalshi_pipeline_tests.defs.conftest import stream_run_config
from kalshi_pipeline_tests.helpers import feed_events, query

NUMERIC_KEYS = {
    "rows_stored",
    "ticks_per_s",
    "lag_p50_ms",
    "lag_p99_ms",
    "reconnects",
    "fallback_s",
    "backlog_bytes",
}


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        r.event_log_entry.user_message
        for r in instance.get_records_for_run(run_id).records
        if r.event_log_entry.user_message
    ]


def _materializations(instance: dg.DagsterInstance) -> list[Any]:
    return instance.fetch_materializations(dg.AssetKey("raw_ticks"), limit=100).records


def _unloaded_landing_bytes(db: Path) -> int:
    with Warehouse(db).connect(read_only=True) as con:
        positions = landing_positions(con)
    return sum(
        s.path.stat().st_size - positions.get(s.name, 0) for s in list_segments(landing_folder(db))
    )


def _interrupt_after_first_report(instance: dg.DagsterInstance) -> threading.Thread:
    """Like a real termination: SIGINT to the main thread, once ticks are flushed and reported."""

    def wait_then_interrupt() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _materializations(instance):
            time.sleep(0.1)
        send_interrupt()

    thread = threading.Thread(target=wait_then_interrupt, daemon=True)
    thread.start()
    return thread


def test_terminating_the_run_stops_the_engine_after_storing_everything_received(
    instance: dg.DagsterInstance, sim: Any, db: Path
) -> None:
    job = defs.resolve_job_def("kalshi_ingest")
    interrupter = _interrupt_after_first_report(instance)
    result = job.execute_in_process(
        run_config=stream_run_config(sim, db, alive_every_s=1),
        instance=instance,
        raise_on_error=False,
    )
    interrupter.join(timeout=5)

    # In process nobody asked for a cancel, so Dagster records FAILURE rather than CANCELED
    # (the e2e test sees CANCELED); what matters is how the op stopped.
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "DagsterExecutionInterruptedError" in failure.cls_name
    messages = _messages(instance, result.run_id)
    assert any("everything received is in DuckDB" in m for m in messages), messages
    assert not [t for t in threading.enumerate() if t.name.startswith("kalshi-") and t.is_alive()]

    assert query(db, "SELECT count(*) FROM ticks")[0][0] > 0
    assert _unloaded_landing_bytes(db) == 0
    stops = [e for e in feed_events(db) if (e[1], e[2]) == ("engine", "stop")]
    assert stops and stops[-1][3] == "dagster run terminated"

    (first, *_) = _materializations(instance)
    metadata = first.asset_materialization.metadata
    assert set(metadata) >= NUMERIC_KEYS
    assert all(isinstance(metadata[k].value, int | float) for k in NUMERIC_KEYS)
    assert metadata["rows_stored"].value > 0


def test_run_rotates_with_success_after_rotate_after_s(
    instance: dg.DagsterInstance, sim: Any, db: Path
) -> None:
    job = defs.resolve_job_def("kalshi_ingest")
    result = job.execute_in_process(
        run_config=stream_run_config(sim, db, rotate_after_s=3, alive_every_s=1),
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    messages = _messages(instance, result.run_id)
    assert any(m.startswith("alive: websocket mode") for m in messages), messages
    assert any("rotation due after 3s" in m for m in messages), messages
    # no keep-alive sensor here to start a successor: with rotation_wait_s 0 the run ends at once
    assert any("stream stopped (rotation after 3s; no successor" in m for m in messages), messages
    assert _unloaded_landing_bytes(db) == 0
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["kalshi/mode"] == "websocket"
    # What the keep-alive sensor reads: where the worker runs, and that this run stored ticks.
    assert worker_in(run.tags) == (
        socket.gethostname(),
        os.getpid(),
        pytest.approx(psutil.Process().create_time(), abs=1.0),
    )
    assert run.tags["kalshi/streamed"] == "true"
    assert run.tags["kalshi/rotation"] == "due"  # what the sensor reads to start a successor


def test_a_new_run_leaves_an_older_run_that_serves_nothing_alone_and_streams_at_once(
    instance: dg.DagsterInstance, sim: Any, db: Path
) -> None:
    # An older STARTED run with no engine serving the database (its worker gone, say): nothing to
    # hand over from, so the new run owns the file at once; the sensor deals with the old run.
    older = create_run_for_test(
        instance, job_name="kalshi_ingest", status=dg.DagsterRunStatus.STARTED
    )
    job = defs.resolve_job_def("kalshi_ingest")
    result = job.execute_in_process(
        run_config=stream_run_config(sim, db, rotate_after_s=3, feed={"mode": "http"}),
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    messages = _messages(instance, result.run_id)
    assert not any("succeeds pid" in m for m in messages), messages
    assert instance.get_run_by_id(older.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]
    assert query(db, "SELECT count(*) FROM ticks WHERE source = 'http'")[0][0] > 0


def test_missing_demo_credentials_fail_the_run_at_once_naming_the_variable(
    instance: dg.DagsterInstance, sim: Any, db: Path
) -> None:
    job = defs.resolve_job_def("kalshi_ingest")
    result = job.execute_in_process(
        run_config=stream_run_config(sim, db, feed={"environment": "demo"}),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert failure is not None and "KALSHI_API_KEY_ID" in (failure.description or "")
    assert not db.exists(), "the engine started although it could not authenticate"
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and "kalshi/streamed" not in run.tags  # the sensor won't relaunch it


def test_the_checks_on_raw_ticks_are_current_after_each_materialization(
    instance: dg.DagsterInstance, sim: Any, db: Path
) -> None:
    import asyncio

    from dagster._core.loader import LoadingContextForTest

    result = defs.resolve_job_def("kalshi_ingest").execute_in_process(
        run_config=stream_run_config(sim, db, rotate_after_s=6, metadata_every_s=2),
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    materializations = _materializations(instance)
    assert len(materializations) >= 2  # the first ticks, then every metadata_every_s, the end
    names = ("raw_ticks_fresh", "raw_ticks_prices_valid", "raw_ticks_no_frame_twice")
    for name in names:
        key = dg.AssetCheckKey(dg.AssetKey("raw_ticks"), name)
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
        latest = history[0]  # Dagster keeps one execution per run, holding its newest result
        assert latest.run_id == result.run_id
        assert latest.event is not None
        newest = max(m.timestamp for m in materializations)
        assert latest.event.timestamp >= newest, f"{name} is older than the newest materialization"
        assert latest.evaluation is not None and latest.evaluation.passed, name
        # What the UI asks to decide between "current" and "not evaluated": this check's newest
        # execution belongs to the newest materialization of raw_ticks.
        assert asyncio.run(
            latest.targets_latest_materialization(LoadingContextForTest(instance))
        ), name
    fresh = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("raw_ticks"), "raw_ticks_fresh"), limit=1
    )[0]
    assert fresh.evaluation.metadata["newest_tick_age_s"].value < 60

"""Failed stream runs are recorded in DuckDB's feed_events; a busy database is not fatal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg

from kalshi_pipeline.definitions import defs
from kalshi_pipeline.defs.ingest.sensors import kalshi_ingest_failures
from kalshi_pipeline.defs.resources import WarehouseResource
from kalshi_pipeline.warehouse import Warehouse
from kalshi_pipeline_tests.defs.conftest import stream_run_config
from kalshi_pipeline_tests.helpers import feed_events


def _failed_run(instance: dg.DagsterInstance, sim: Any, db: Path) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def("kalshi_ingest").execute_in_process(
        run_config=stream_run_config(sim, db, feed={"environment": "demo"}),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    return result


def _failure_context(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult
) -> dg.RunFailureSensorContext:
    return dg.build_run_status_sensor_context(
        sensor_name="kalshi_ingest_failures",
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),  # as stored: status and tags
        dagster_event=result.get_run_failure_event(),
    ).for_run_failure()


def test_a_failed_run_is_recorded_in_feed_events(
    instance: dg.DagsterInstance, sim: Any, db: Path
) -> None:
    result = _failed_run(instance, sim, db)
    kalshi_ingest_failures(
        _failure_context(instance, result), warehouse=WarehouseResource(path=str(db))
    )
    rows = [e for e in feed_events(db) if e[1] == "dagster"]
    assert len(rows) == 1
    _, source, kind, detail = rows[0]
    assert (source, kind) == ("dagster", "run_failed")
    assert result.run_id in detail
    assert "KALSHI_API_KEY_ID" in detail  # why it failed, not just that it did
    assert "failed before streaming, so the keep-alive sensor does not relaunch" in detail


def test_a_busy_database_is_logged_and_skipped(
    instance: dg.DagsterInstance, sim: Any, db: Path
) -> None:
    result = _failed_run(instance, sim, db)
    Warehouse(db).migrate()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', "
            "flush=True); time.sleep(60)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # Returns (after the short timeout) instead of raising or waiting for the holder.
        kalshi_ingest_failures(
            _failure_context(instance, result), warehouse=WarehouseResource(path=str(db))
        )
    finally:
        holder.kill()
        holder.wait()
    assert not [e for e in feed_events(db) if e[1] == "dagster"]

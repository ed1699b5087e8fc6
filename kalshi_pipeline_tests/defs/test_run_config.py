"""Bad run config is refused by Dagster before any run exists, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from kalshi_pipeline.definitions import defs


def _launch(instance: dg.DagsterInstance, run_config: dict[str, Any]) -> str:
    job = defs.resolve_job_def("kalshi_ingest")
    with pytest.raises(dg.DagsterInvalidConfigError) as caught:
        job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
    assert instance.get_runs() == [], "a run was created for invalid config"
    return str(caught.value)


def test_unknown_mode_is_refused_before_the_run_starts(
    instance: dg.DagsterInstance, kalshi_home: Path
) -> None:
    message = _launch(instance, {"resources": {"kalshi_feed": {"config": {"mode": "ticker_v2"}}}})
    assert "kalshi_feed:config:mode" in message
    assert "ticker_v2" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("poll_interval_s", -1.0), ("websocket_timeout_s", 0.0), ("max_retries", 0)],
)
def test_out_of_range_feed_setting_is_refused_before_the_run_starts(
    instance: dg.DagsterInstance, kalshi_home: Path, field: str, value: float
) -> None:
    message = _launch(instance, {"resources": {"kalshi_feed": {"config": {field: value}}}})
    assert "kalshi_feed" in message
    assert field in message


def test_negative_reporting_interval_is_refused_before_the_run_starts(
    instance: dg.DagsterInstance, kalshi_home: Path
) -> None:
    message = _launch(instance, {"ops": {"stream_ticks": {"config": {"metadata_every_s": -5}}}})
    assert "stream_ticks" in message
    assert "metadata_every_s" in message


@pytest.mark.parametrize("where", ["folder", "/proc/nope.duckdb"])
def test_a_database_path_that_cannot_work_is_refused_at_launch(
    instance: dg.DagsterInstance, kalshi_home: Path, tmp_path: Path, where: str
) -> None:
    path = str(tmp_path) if where == "folder" else where
    message = _launch(instance, {"resources": {"warehouse": {"config": {"path": path}}}})
    assert "warehouse" in message and "path" in message
    assert ("is a folder" if where == "folder" else "pseudo-filesystem") in message

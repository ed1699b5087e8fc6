"""`kalshi-pipeline status` reads Dagster and DuckDB and says whether the stream is healthy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from kalshi_pipeline import status
from kalshi_pipeline.definitions import defs
from kalshi_pipeline_tests.defs.conftest import stream_run_config


def test_a_finished_run_is_reported_unhealthy_with_the_reason(
    instance: dg.DagsterInstance,
    sim: Any,
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = defs.resolve_job_def("kalshi_ingest").execute_in_process(
        run_config=stream_run_config(sim, db, rotate_after_s=2, feed={"mode": "http"}),
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    sim.set_faults(paused_shards=[2])  # a maintenance on one shard, the others trading

    code = status.main(["--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["healthy"] is False
    assert f"the newest kalshi_ingest run {result.run_id[:8]} is SUCCESS" in report["reason"]
    assert report["run"]["mode"] == "http"
    assert report["database"] == str(db.resolve())  # found through the run, not the default
    assert report["newest_tick_age_s"] is not None
    assert report["landing_backlog_bytes"] == 0
    assert ("engine", "stop") in {(e["source"], e["kind"]) for e in report["feed_events"]}

    # the exchange the run read, shard by shard (the simulator serves Kalshi's shards)
    exchange = report["exchange"]
    assert exchange["url"] == f"{sim.rest_url}/exchange/status"
    shards = {s["exchange_index"]: s for s in exchange["shards"]}
    assert len(shards) >= 2
    assert shards[2]["trading_active"] is False
    assert all(s["trading_active"] is True for i, s in shards.items() if i != 2)

    assert status.main([]) == 1
    text = capsys.readouterr().out
    assert text.startswith("UNHEALTHY: the newest kalshi_ingest run")
    assert "feed events (newest 10):" in text
    assert "exchange     open, trading" in text
    assert "  shard 0    open, trading " in text
    assert "  shard 2    open, trading paused" in text


def test_an_unreachable_exchange_is_a_problem_named_with_its_url(
    instance: dg.DagsterInstance,
    sim: Any,
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = "http://127.0.0.1:9/trade-api/v2"  # the discard port: nothing listens there
    feed = {"mode": "http", "rest_url": sim.rest_url}
    result = defs.resolve_job_def("kalshi_ingest").execute_in_process(
        run_config=stream_run_config(sim, db, rotate_after_s=2, feed=feed),
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    report = status.collect(None, db)
    assert report.exchange is not None
    report.run.rest_url = dead  # as if the run had read an exchange that is now gone
    report.problems.clear()
    report.exchange = None
    status._read_exchange(report, 2.0)
    assert report.exchange is None
    assert report.problems == [report.problems[0]]
    assert report.problems[0].startswith(f"exchange status unknown ({dead}/exchange/status)")
    assert status.main(["--no-exchange", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["exchange"] is None


def test_without_a_dagster_home_it_says_how_to_start_the_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = status.main(
        ["--dagster-home", str(tmp_path / "nowhere"), "--database", str(tmp_path / "no.duckdb")]
    )
    assert code == 2
    assert "kalshi-pipeline dev" in capsys.readouterr().out

"""The keep-alive sensor's decisions, against a real (temporary) Dagster instance."""

from __future__ import annotations

import time
from typing import Any

import dagster as dg
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_run_for_test, freeze_time

from kalshi_pipeline.definitions import defs
from kalshi_pipeline.defs.ingest.sensors import backoff_s, kalshi_ingest_keepalive

HTTP_CONFIG = {"resources": {"kalshi_feed": {"config": {"mode": "http"}}}}
JOB_ORIGIN = RemoteJobOrigin(
    RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("kalshi_pipeline"), "__repository__"),
    "kalshi_ingest",
)


def evaluate(instance: dg.DagsterInstance) -> Any:
    return kalshi_ingest_keepalive(dg.build_sensor_context(instance=instance, definitions=defs))


def make_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, **kwargs: Any) -> Any:
    return create_run_for_test(instance, job_name="kalshi_ingest", status=status, **kwargs)


def failed_run(instance: dg.DagsterInstance, **kwargs: Any) -> Any:
    run = make_run(instance, dg.DagsterRunStatus.STARTED, **kwargs)
    instance.report_run_failed(run, "crashed")
    return run


def test_with_no_run_yet_it_launches_one_tagged_for_the_shard_limit(
    instance: dg.DagsterInstance,
) -> None:
    request = evaluate(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config == {}
    assert request.run_key == "first"
    assert request.tags["kalshi/shard"] == "all"


def test_with_no_unfinished_run_it_relaunches_with_the_newest_runs_config(
    instance: dg.DagsterInstance,
) -> None:
    make_run(instance, dg.DagsterRunStatus.SUCCESS)
    last = make_run(instance, dg.DagsterRunStatus.CANCELED, run_config=HTTP_CONFIG)
    request = evaluate(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config == HTTP_CONFIG
    assert request.run_key == f"after-{last.run_id}"
    assert request.tags["kalshi/restart_of"] == last.run_id


def test_a_queued_run_is_waited_for_not_doubled(instance: dg.DagsterInstance) -> None:
    queued = make_run(instance, dg.DagsterRunStatus.QUEUED, remote_job_origin=JOB_ORIGIN)
    skip = evaluate(instance)
    assert isinstance(skip, dg.SkipReason)
    assert f"run {queued.run_id} is QUEUED" in (skip.skip_message or "")


def test_a_starting_or_canceling_run_is_waited_for(instance: dg.DagsterInstance) -> None:
    for status in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.CANCELING):
        run = make_run(instance, status)
        skip = evaluate(instance)
        assert isinstance(skip, dg.SkipReason)
        assert f"run {run.run_id} is {status.value}" in (skip.skip_message or "")
        instance.report_run_canceled(run)


def test_an_alive_run_is_left_alone(instance: dg.DagsterInstance) -> None:
    run = make_run(instance, dg.DagsterRunStatus.STARTED)
    instance.report_engine_event("alive", run)
    skip = evaluate(instance)
    assert isinstance(skip, dg.SkipReason)
    assert f"run {run.run_id} is STARTED and alive" in (skip.skip_message or "")


def test_a_silent_started_run_is_marked_failed_and_replaced_with_its_config(
    instance: dg.DagsterInstance,
) -> None:
    # Alive lines every 10 s: four missed ones (40 s) mean the worker is gone.
    config = {**HTTP_CONFIG, "ops": {"stream_ticks": {"config": {"alive_every_s": 10}}}}
    zombie = make_run(instance, dg.DagsterRunStatus.STARTED, run_config=config)
    instance.report_engine_event("alive", zombie)

    with freeze_time(time.time() + 30):
        assert isinstance(evaluate(instance), dg.SkipReason)
    with freeze_time(time.time() + 45):
        request = evaluate(instance)

    assert isinstance(request, dg.RunRequest)
    assert request.run_config == config
    assert request.tags["kalshi/restart_of"] == zombie.run_id
    assert instance.get_run_by_id(zombie.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]


def test_runs_that_keep_failing_are_relaunched_with_a_growing_delay(
    instance: dg.DagsterInstance,
) -> None:
    failed_run(instance)
    assert isinstance(evaluate(instance), dg.RunRequest), "a single failure relaunches at once"

    failed_run(instance)
    last = failed_run(instance, run_config=HTTP_CONFIG)
    skip = evaluate(instance)
    assert isinstance(skip, dg.SkipReason)
    assert "3 runs in a row failed" in (skip.skip_message or "")
    assert "backing off 60s: next launch in" in (skip.skip_message or "")

    with freeze_time(time.time() + backoff_s(3) + 1):
        request = evaluate(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config == HTTP_CONFIG
    assert request.run_key == f"after-{last.run_id}"


def test_backoff_doubles_per_failure_and_is_capped() -> None:
    assert [backoff_s(n) for n in range(1, 7)] == [0, 30, 60, 120, 240, 480]
    assert backoff_s(20) == 600


def test_config_the_job_no_longer_accepts_is_replaced_by_the_defaults(
    instance: dg.DagsterInstance,
) -> None:
    stale = {"resources": {"kalshi_feed": {"config": {"feed_mode": "http"}}}}
    make_run(instance, dg.DagsterRunStatus.CANCELED, run_config=stale)
    request = evaluate(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config == {}

"""The keep-alive sensor's decisions, against a real (temporary) Dagster instance."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import dagster as dg
import psutil
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_run_for_test, freeze_time

from kalshi_pipeline.definitions import defs
from kalshi_pipeline.defs.ingest.runs import worker_tag
from kalshi_pipeline.defs.ingest.sensors import backoff_s, kalshi_ingest_keepalive
from kalshi_pipeline_tests.helpers import wait_for

HTTP_CONFIG = {"resources": {"kalshi_feed": {"config": {"mode": "http"}}}}
PROD_CONFIG = {"resources": {"kalshi_feed": {"config": {"environment": "prod"}}}}
STREAMED = {"kalshi/streamed": "true"}  # what the op tags once its first ticks are stored
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
    zombie = make_run(instance, dg.DagsterRunStatus.STARTED, run_config=config, tags=STREAMED)
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
    failed_run(instance, tags=STREAMED)
    assert isinstance(evaluate(instance), dg.RunRequest), "a single failure relaunches at once"

    failed_run(instance, tags=STREAMED)
    last = failed_run(instance, run_config=HTTP_CONFIG, tags=STREAMED)
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


def test_a_launch_that_failed_before_streaming_is_reported_and_not_relaunched(
    instance: dg.DagsterInstance,
) -> None:
    streaming = make_run(
        instance, dg.DagsterRunStatus.STARTED, run_config=HTTP_CONFIG, tags=STREAMED
    )
    instance.report_engine_event("alive", streaming)
    prod = failed_run(instance, run_config=PROD_CONFIG)  # no credentials: failed in preflight

    skip = evaluate(instance)
    assert isinstance(skip, dg.SkipReason)
    assert f"run {streaming.run_id} is STARTED and alive" in (skip.skip_message or "")
    assert f"run {prod.run_id} failed before streaming" in (skip.skip_message or "")

    instance.report_run_canceled(streaming)  # the operator terminates the working stream
    request = evaluate(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config == HTTP_CONFIG
    assert request.run_key == f"after-{prod.run_id}"


def test_failed_launches_that_are_not_retried_do_not_delay_the_relaunch(
    instance: dg.DagsterInstance,
) -> None:
    make_run(instance, dg.DagsterRunStatus.CANCELED, run_config=HTTP_CONFIG, tags=STREAMED)
    for _ in range(3):
        failed_run(instance, run_config=PROD_CONFIG)
    request = evaluate(instance)
    assert isinstance(request, dg.RunRequest), "three failed Launchpad tries caused a back-off"
    assert request.run_config == HTTP_CONFIG


def test_a_config_launched_again_that_streams_is_honoured(instance: dg.DagsterInstance) -> None:
    make_run(instance, dg.DagsterRunStatus.CANCELED, tags=STREAMED)
    failed_run(instance, run_config=PROD_CONFIG)
    again = make_run(
        instance, dg.DagsterRunStatus.STARTED, run_config=PROD_CONFIG, tags=STREAMED
    )  # launched again once fixed; it stored ticks
    instance.report_run_canceled(again)
    request = evaluate(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config == PROD_CONFIG


def test_the_sensors_own_launch_failing_before_streaming_keeps_the_streamed_config(
    instance: dg.DagsterInstance,
) -> None:
    make_run(instance, dg.DagsterRunStatus.CANCELED, run_config=HTTP_CONFIG, tags=STREAMED)
    sensor_tags = {"kalshi/launched_by": "kalshi_ingest_keepalive"}
    failed_run(instance, run_config=HTTP_CONFIG, tags=sensor_tags)
    failed_run(instance, run_config=HTTP_CONFIG, tags=sensor_tags)
    skip = evaluate(instance)
    assert isinstance(skip, dg.SkipReason), "the sensor's own failures still back off"
    assert "2 runs in a row failed" in (skip.skip_message or "")
    with freeze_time(time.time() + backoff_s(2) + 1):
        request = evaluate(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config == HTTP_CONFIG


def test_with_nothing_ever_streamed_a_failed_launch_gives_way_to_the_defaults(
    instance: dg.DagsterInstance,
) -> None:
    failed_run(instance, run_config=PROD_CONFIG)
    request = evaluate(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config == {}


def _worker(pid: int, started: float, host: str | None = None) -> dict[str, str]:
    return {"kalshi/worker": worker_tag(host or socket.gethostname(), pid, started)}


def test_a_run_whose_worker_process_died_is_replaced_at_once(
    instance: dg.DagsterInstance,
) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = psutil.Process(proc.pid).create_time()
    tags = {**STREAMED, **_worker(proc.pid, started)}
    run = make_run(instance, dg.DagsterRunStatus.STARTED, run_config=HTTP_CONFIG, tags=tags)
    instance.report_engine_event("alive", run)
    skip = evaluate(instance)
    assert isinstance(skip, dg.SkipReason), "a live worker was taken for dead"
    assert "is STARTED and alive" in (skip.skip_message or "")

    proc.kill()
    proc.wait()
    request = evaluate(instance)  # its newest event is seconds old: only the pid tells
    assert isinstance(request, dg.RunRequest)
    assert request.run_config == HTTP_CONFIG
    assert request.tags["kalshi/restart_of"] == run.run_id
    dead = instance.get_run_by_id(run.run_id)
    assert dead is not None and dead.status == dg.DagsterRunStatus.FAILURE
    failure = instance.get_records_for_run(run.run_id, limit=1, ascending=False).records[0]
    assert f"its worker (pid {proc.pid}) is gone" in (failure.event_log_entry.message or "")


def test_a_reused_pid_does_not_pass_for_the_worker(instance: dg.DagsterInstance) -> None:
    me = psutil.Process()
    run = make_run(
        instance,
        dg.DagsterRunStatus.STARTED,
        tags={**STREAMED, **_worker(me.pid, me.create_time() - 3600)},
    )
    instance.report_engine_event("alive", run)
    assert isinstance(evaluate(instance), dg.RunRequest)


def test_a_worker_on_another_host_is_judged_by_its_events(instance: dg.DagsterInstance) -> None:
    run = make_run(
        instance,
        dg.DagsterRunStatus.STARTED,
        tags={**STREAMED, **_worker(999_999, 0.0, host="elsewhere.example")},
    )
    instance.report_engine_event("alive", run)
    skip = evaluate(instance)
    assert isinstance(skip, dg.SkipReason)
    assert "is STARTED and alive" in (skip.skip_message or "")
    with freeze_time(time.time() + 300):
        assert isinstance(evaluate(instance), dg.RunRequest)


def test_a_worker_that_exited_but_was_not_reaped_counts_as_dead(
    instance: dg.DagsterInstance,
) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(proc.pid).create_time()
    try:
        wait_for(
            lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE,
            timeout=30,
            what="the child to exit (a zombie until reaped)",
        )
        run = make_run(
            instance,
            dg.DagsterRunStatus.STARTED,
            tags={**STREAMED, **_worker(proc.pid, started)},
        )
        instance.report_engine_event("alive", run)
        request = evaluate(instance)
        assert isinstance(request, dg.RunRequest)
        assert request.tags["kalshi/restart_of"] == run.run_id
    finally:
        proc.wait()


ROTATION_DUE = {"kalshi/rotation": "due", **STREAMED}


def test_a_run_due_to_rotate_gets_a_successor_with_its_config_outside_the_shard_limit(
    instance: dg.DagsterInstance,
) -> None:
    run = make_run(instance, dg.DagsterRunStatus.STARTED, run_config=HTTP_CONFIG, tags=ROTATION_DUE)
    instance.report_engine_event("alive", run)
    request = evaluate(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config == HTTP_CONFIG
    assert request.tags["kalshi/successor_of"] == run.run_id
    # the queue allows one run per shard tag value: a tagged successor would wait behind the
    # very run it is to succeed, which waits for it to hand over
    assert "kalshi/shard" not in request.tags
    # while the successor starts, the sensor waits for both
    make_run(
        instance,
        dg.DagsterRunStatus.STARTING,
        run_config=HTTP_CONFIG,
        tags={"kalshi/successor_of": run.run_id},
    )
    assert isinstance(evaluate(instance), dg.SkipReason)


def test_a_failed_successor_is_retried_after_a_delay_while_the_run_streams_on(
    instance: dg.DagsterInstance,
) -> None:
    run = make_run(instance, dg.DagsterRunStatus.STARTED, tags=ROTATION_DUE)
    instance.report_engine_event("alive", run)
    failed_run(instance, tags={"kalshi/successor_of": run.run_id})
    skip = evaluate(instance)
    assert isinstance(skip, dg.SkipReason)
    assert "1 successor(s) failed" in (skip.skip_message or ""), skip.skip_message
    with freeze_time(time.time() + backoff_s(2) + 5):
        instance.report_engine_event("alive", run)
        request = evaluate(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"rotate-{run.run_id}-1"  # a new key: the first one was used

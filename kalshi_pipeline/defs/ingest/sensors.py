"""Sensors of the stream: `kalshi_ingest_keepalive` (the supervisor) and a failure recorder.

The keep-alive sensor, every 15 s:
- an unfinished run (QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING) that is alive: skip,
  saying which run and why;
- a STARTED run whose worker is dead: its worker is gone (whole tree killed, host crash; run
  monitoring cannot see that with the local run launcher). It is marked FAILURE and replaced.
  Dead means: the worker process the op recorded in its `kalshi/worker` tag no longer exists on
  this host (checked with psutil, so within one evaluation of the death), or, for a worker on
  another host or one that recorded nothing yet, its newest event is older than
  `runs.stale_after_s` (4 alive intervals);
- no unfinished run: launch one with the config of the newest run that streamed (the op tags a
  run `kalshi/streamed` once its first ticks are stored) or at least did not fail: a run that
  FAILED before storing anything, launched from the Launchpad or the API, is reported in the
  skip reason and the log and its config is not relaunched, until someone launches it again
  and it streams. Tagged `kalshi/shard: all` (dagster.yaml allows one run per value), keyed
  `after-<previous run id>` (a constant key would launch once, ever);
- one run alive whose `rotate_after_s` is up (tag `kalshi/rotation: due`): launch its successor
  with the same run config, tagged `kalshi/successor_of: <run id>` and without the shard tag (the
  queue would hold it behind the very run it succeeds); the running run hands over to it once the
  successor's feed is live. A successor that failed is tried again after 30 s * 2^(N-1) (capped
  at 10 min) while the running run streams on;
- runs that keep failing: the N-th consecutive FAILURE waits 30 s * 2^(N-2), capped at 10 min,
  after the last one ended; the skip says how long is left. Launches that failed before
  streaming and are not retried do not count.
Every evaluation that launches nothing returns a SkipReason saying why. Turning this sensor off
is the operator's stop switch; with it on, terminating a run means "restart it".

The failure sensor only records: a failed run goes into DuckDB's `feed_events` (source `dagster`,
kind `run_failed`) and into the Dagster log, saying whether it failed before streaming. It is not
the supervisor.
"""

import logging
import socket
from collections.abc import Sequence
from typing import Any

import dagster as dg
import psutil
from dagster._time import get_current_timestamp  # Dagster's clock: tests move it (freeze_time)

from kalshi_pipeline.defs.ingest.jobs import kalshi_ingest_job
from kalshi_pipeline.defs.ingest.runs import (
    FAILURE_SENSOR_NAME,
    JOB_NAME,
    LAUNCHED_BY_TAG,
    RESTART_OF_TAG,
    ROTATION_DUE,
    ROTATION_TAG,
    SENSOR_NAME,
    SHARD_ALL,
    SHARD_TAG,
    STREAMED,
    STREAMED_TAG,
    SUCCESSOR_OF_TAG,
    database_in,
    failed_before_streaming,
    launched_by_sensor,
    not_relaunched,
    stale_after_s,
    unfinished,
    worker_in,
)
from kalshi_pipeline.defs.resources import WarehouseResource
from kalshi_pipeline.warehouse import Warehouse, WarehouseError
from kalshi_pipeline.warehouse.status import record_feed_event

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 30.0
BACKOFF_CAP_S = 600.0
FAILURES_LOOKED_AT = 12
FEED_EVENT_TIMEOUT_S = 5.0
PID_START_SLACK_S = 1.0  # psutil's process start time is rounded differently across calls


def backoff_s(consecutive_failures: int) -> float:
    """Delay before relaunching after this many failed runs in a row (the first is free)."""
    if consecutive_failures <= 1:
        return 0.0
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (consecutive_failures - 2))


def _short(run_id: str) -> str:
    return run_id[:8]


def newest_event_timestamp(instance: dg.DagsterInstance, record: dg.RunRecord) -> float:
    """When the run last wrote to its event log (its alive lines keep this recent)."""
    events = instance.get_records_for_run(record.dagster_run.run_id, limit=1, ascending=False)
    if events.records:
        return float(events.records[0].timestamp)
    return record.update_timestamp.timestamp()


def _ended_at(record: dg.RunRecord) -> float:
    return float(record.end_time) if record.end_time else record.update_timestamp.timestamp()


def _not_retried(run: dg.DagsterRun) -> bool:
    """A launch from outside this sensor that failed before streaming: its config is reported,
    never relaunched (someone launching it again is honoured as any launch)."""
    return failed_before_streaming(run) and not launched_by_sensor(run)


def _consecutive_failures(records: Sequence[dg.RunRecord]) -> int:
    n = 0
    for record in records:
        if _not_retried(record.dagster_run):
            continue
        if record.dagster_run.status != dg.DagsterRunStatus.FAILURE:
            break
        n += 1
    return n


def _config_source(
    instance: dg.DagsterInstance, records: Sequence[dg.RunRecord]
) -> dg.DagsterRun | None:
    """The run whose config to relaunch: the newest that did not fail before streaming; past the
    runs looked at, the newest that streamed; None when none ever did (then: the defaults)."""
    for record in records:
        if not failed_before_streaming(record.dagster_run):
            return record.dagster_run
    streamed = instance.get_run_records(
        dg.RunsFilter(job_name=JOB_NAME, tags={STREAMED_TAG: STREAMED}), limit=1
    )
    return streamed[0].dagster_run if streamed else None


def _not_retried_note(records: Sequence[dg.RunRecord]) -> str:
    rejected = not_relaunched(record.dagster_run for record in records)
    if not rejected:
        return ""
    ids = ", ".join(run.run_id for run in rejected)
    return (
        f"run {ids} failed before streaming: its config is not relaunched (launch it again once "
        "fixed)"
    )


def worker_gone(run: dg.DagsterRun) -> str | None:
    """Why the run's worker is known dead, or None: alive, on another host, or not recorded."""
    worker = worker_in(run.tags)
    if worker is None:
        return None
    host, pid, started = worker
    if host != socket.gethostname():
        return None
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) > PID_START_SLACK_S:
            return f"its worker (pid {pid}) is gone; that pid now belongs to another process"
        if process.status() == psutil.STATUS_ZOMBIE:
            return f"its worker (pid {pid}) has exited"
    except psutil.NoSuchProcess:
        return f"its worker (pid {pid}) is gone"
    except psutil.AccessDenied:
        return None
    return None


def _mark_dead(instance: dg.DagsterInstance, run: dg.DagsterRun, why: str) -> None:
    message = f"{SENSOR_NAME}: {why}; marking the run failed and starting a new one"
    # If the worker is somehow alive, ask it to stop first; with its code server gone this just
    # fails (and marks the run CANCELING), which the failure report below overrides.
    try:
        instance.run_launcher.terminate(run.run_id)
    except Exception as exc:
        log.info("terminate %s before marking it failed: %s", run.run_id, exc)
    instance.report_run_failed(run, message)


def _usable_config(
    context: dg.SensorEvaluationContext, run_config: dict[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """The config to relaunch with; an old run's config the job no longer accepts is dropped."""
    repository = context.repository_def
    if repository is None or not run_config:
        return run_config, None
    try:
        dg.validate_run_config(repository.get_job(JOB_NAME), run_config)
    except dg.DagsterInvalidConfigError as exc:
        return {}, f"previous run config no longer valid, using defaults ({exc.message[:300]})"
    return run_config, None


def _successor(
    context: dg.SensorEvaluationContext, run: dg.DagsterRun, now: float
) -> dg.RunRequest | str:
    """The run request for the successor of `run`, whose rotation is due, or why not yet."""
    tried = context.instance.get_run_records(
        dg.RunsFilter(job_name=JOB_NAME, tags={SUCCESSOR_OF_TAG: run.run_id}), limit=50
    )
    failed = [r for r in tried if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
    if failed:
        delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (len(failed) - 1))
        remaining = _ended_at(failed[0]) + delay - now
        if remaining > 0:
            return (
                f"run {run.run_id} is due to rotate; {len(failed)} successor(s) failed (newest "
                f"{failed[0].dagster_run.run_id}): next in {remaining:.0f}s, it streams on "
                "meanwhile"
            )
    run_config, note = _usable_config(context, dict(run.run_config))
    why = f"run {run.run_id} is due to rotate: starting its successor, which it hands over to"
    if note:
        why += f"; {note}"
    context.log.info(f"launching kalshi_ingest: {why}")
    return dg.RunRequest(
        run_key=f"rotate-{run.run_id}-{len(tried)}",
        run_config=run_config,
        tags={SUCCESSOR_OF_TAG: run.run_id, LAUNCHED_BY_TAG: SENSOR_NAME},
    )


@dg.sensor(
    name=SENSOR_NAME,
    job=kalshi_ingest_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps one kalshi_ingest run going: relaunches it with the config of the newest "
    "run that streamed (never one that failed before storing ticks), replaces runs whose worker "
    "died, backs off when runs keep failing. Turn it off to stop the stream.",
)
def kalshi_ingest_keepalive(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    instance = context.instance
    now = get_current_timestamp()
    waiting: list[str] = []
    replaced: list[str] = []
    alive: list[dg.DagsterRun] = []
    for record in instance.get_run_records(
        dg.RunsFilter(job_name=JOB_NAME, statuses=unfinished()), limit=20
    ):
        run = record.dagster_run
        if run.status != dg.DagsterRunStatus.STARTED:
            waiting.append(f"run {run.run_id} is {run.status.value}")
            continue
        gone = worker_gone(run)
        age = max(0.0, now - newest_event_timestamp(instance, record))
        limit = stale_after_s(run.run_config)
        if gone is None and age < limit:
            waiting.append(
                f"run {run.run_id} is STARTED and alive (newest event {age:.0f}s ago, "
                f"dead after {limit:.0f}s)"
            )
            alive.append(run)
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != dg.DagsterRunStatus.STARTED:
            continue  # it ended while we looked: the next evaluation sees how
        why = gone or f"no event for {age:.0f}s (dead after {limit:.0f}s); its worker is gone"
        _mark_dead(instance, current, why)
        replaced.append(run.run_id)
        context.log.warning(f"run {run.run_id}: {why}; marked failed")

    recent = instance.get_run_records(dg.RunsFilter(job_name=JOB_NAME), limit=FAILURES_LOOKED_AT)
    source = _config_source(instance, recent)
    not_retried = _not_retried_note(recent)
    if len(waiting) == 1 and len(alive) == 1 and alive[0].tags.get(ROTATION_TAG) == ROTATION_DUE:
        successor = _successor(context, alive[0], now)
        if isinstance(successor, dg.RunRequest):
            return successor
        waiting.append(successor)
    if waiting:
        return dg.SkipReason("; ".join([*waiting, not_retried] if not_retried else waiting))

    failures = _consecutive_failures(recent)
    delay = backoff_s(failures)
    if delay > 0:
        newest_failed = next(r for r in recent if not _not_retried(r.dagster_run))
        remaining = _ended_at(newest_failed) + delay - now
        if remaining > 0:
            marked = f"marked dead run {', '.join(replaced)} failed; " if replaced else ""
            rejected = f"; {not_retried}" if not_retried else ""
            return dg.SkipReason(
                f"{marked}{failures} runs in a row failed (newest "
                f"{newest_failed.dagster_run.run_id}); backing off {delay:.0f}s: next launch in "
                f"{remaining:.0f}s{rejected}"
            )

    last = recent[0].dagster_run if recent else None
    run_config, note = _usable_config(context, dict(source.run_config) if source else {})
    why = (
        f"replacing dead run {', '.join(replaced)}"
        if replaced
        else f"no unfinished run; previous {last.run_id} ended {last.status.value}"
        if last
        else "no kalshi_ingest run yet"
    )
    if failures:
        why += f"; {failures} failed in a row"
    if not_retried:
        why += f"; {not_retried}"
    if last is not None and source is not last:
        why += (
            f"; with the config of run {source.run_id}, the newest that did not fail before "
            "streaming"
            if source
            else "; with the default config (no run streamed yet)"
        )
    if note:
        why += f"; {note}"
    context.log.info(f"launching kalshi_ingest: {why}")
    return dg.RunRequest(
        run_key=f"after-{last.run_id}" if last else "first",
        run_config=run_config,
        tags={
            SHARD_TAG: SHARD_ALL,
            RESTART_OF_TAG: last.run_id if last else "none",
            LAUNCHED_BY_TAG: SENSOR_NAME,
        },
    )


def _error_of(context: dg.RunFailureSensorContext) -> str:
    """The most telling line: the step's failure description or error, else the run's message."""
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return data.user_failure_data.description
        if data.error is not None:
            return f"{data.error.cls_name}: {data.error.message.strip()}"
    return context.failure_event.message or "no error message"


@dg.run_failure_sensor(
    name=FAILURE_SENSOR_NAME,
    monitored_jobs=[kalshi_ingest_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records failed kalshi_ingest runs in DuckDB (feed_events, source dagster). "
    "Alerting only: kalshi_ingest_keepalive restarts runs.",
)
def kalshi_ingest_failures(
    context: dg.RunFailureSensorContext, warehouse: WarehouseResource
) -> None:
    run = context.dagster_run
    detail = f"run {run.run_id} failed: {_error_of(context)}"
    if _not_retried(run):
        detail += (
            "; it failed before streaming, so the keep-alive sensor does not relaunch its config"
        )
    context.log.error(f"kalshi_ingest {detail}")
    path = database_in(run.run_config) or warehouse.path
    try:
        record_feed_event(
            Warehouse(path), "dagster", "run_failed", detail, timeout_s=FEED_EVENT_TIMEOUT_S
        )
    except WarehouseError as exc:
        context.log.warning(f"could not record the failure in {path} (moving on): {exc}")

"""Sensors of the stream: `kalshi_ingest_keepalive` (the supervisor) and a failure recorder.

The keep-alive sensor, every 30 s:
- an unfinished run (QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING) that is alive: skip,
  saying which run and why;
- a STARTED run whose newest event is older than `runs.stale_after_s` (4 alive intervals): its
  worker is gone (whole tree killed, host crash; run monitoring cannot see that with the local
  run launcher). It is marked FAILURE and replaced;
- no unfinished run: launch one with the newest run's run config (so a mode chosen in the
  Launchpad stays), tagged `kalshi/shard: all` (dagster.yaml allows one run per value), keyed
  `after-<previous run id>` (a constant key would launch once, ever);
- runs that keep failing: the N-th consecutive FAILURE waits 30 s * 2^(N-2), capped at 10 min,
  after the last one ended; the skip says how long is left.
Every evaluation that launches nothing returns a SkipReason saying why. Turning this sensor off
is the operator's stop switch; with it on, terminating a run means "restart it".

The failure sensor only records: a failed run goes into DuckDB's `feed_events` (source `dagster`,
kind `run_failed`) and into the Dagster log. It is not the supervisor.
"""

import logging
from collections.abc import Sequence
from typing import Any

import dagster as dg
from dagster._time import get_current_timestamp  # Dagster's clock: tests move it (freeze_time)

from kalshi_pipeline.defs.ingest.jobs import kalshi_ingest_job
from kalshi_pipeline.defs.ingest.runs import (
    FAILURE_SENSOR_NAME,
    JOB_NAME,
    LAUNCHED_BY_TAG,
    RESTART_OF_TAG,
    SENSOR_NAME,
    SHARD_ALL,
    SHARD_TAG,
    database_in,
    stale_after_s,
    unfinished,
)
from kalshi_pipeline.defs.resources import WarehouseResource
from kalshi_pipeline.warehouse import Warehouse, WarehouseError
from kalshi_pipeline.warehouse.status import record_feed_event

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 30.0
BACKOFF_CAP_S = 600.0
FAILURES_LOOKED_AT = 12
FEED_EVENT_TIMEOUT_S = 5.0


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


def _consecutive_failures(records: Sequence[dg.RunRecord]) -> int:
    n = 0
    for record in records:
        if record.dagster_run.status != dg.DagsterRunStatus.FAILURE:
            break
        n += 1
    return n


def _mark_dead(instance: dg.DagsterInstance, run: dg.DagsterRun, age: float) -> None:
    message = (
        f"{SENSOR_NAME}: no event for {age:.0f}s (dead after {stale_after_s(run.run_config):.0f}s);"
        " its worker is gone, marking the run failed and starting a new one"
    )
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


@dg.sensor(
    name=SENSOR_NAME,
    job=kalshi_ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps one kalshi_ingest run going: relaunches it with the newest run's config, "
    "replaces dead (silent) runs, backs off when runs keep failing. Turn it off to stop the "
    "stream.",
)
def kalshi_ingest_keepalive(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    instance = context.instance
    now = get_current_timestamp()
    waiting: list[str] = []
    replaced: list[str] = []
    for record in instance.get_run_records(
        dg.RunsFilter(job_name=JOB_NAME, statuses=unfinished()), limit=20
    ):
        run = record.dagster_run
        if run.status != dg.DagsterRunStatus.STARTED:
            waiting.append(f"run {run.run_id} is {run.status.value}")
            continue
        age = max(0.0, now - newest_event_timestamp(instance, record))
        limit = stale_after_s(run.run_config)
        if age < limit:
            waiting.append(
                f"run {run.run_id} is STARTED and alive (newest event {age:.0f}s ago, "
                f"dead after {limit:.0f}s)"
            )
            continue
        _mark_dead(instance, run, age)
        replaced.append(run.run_id)
        context.log.warning(f"run {run.run_id}: no event for {age:.0f}s; marked failed")
    if waiting:
        return dg.SkipReason("; ".join(waiting))

    recent = instance.get_run_records(dg.RunsFilter(job_name=JOB_NAME), limit=FAILURES_LOOKED_AT)
    failures = _consecutive_failures(recent)
    delay = backoff_s(failures)
    if delay > 0:
        remaining = _ended_at(recent[0]) + delay - now
        if remaining > 0:
            marked = f"marked dead run {', '.join(replaced)} failed; " if replaced else ""
            return dg.SkipReason(
                f"{marked}{failures} runs in a row failed (newest "
                f"{recent[0].dagster_run.run_id}); backing off {delay:.0f}s: next launch in "
                f"{remaining:.0f}s"
            )

    last = recent[0].dagster_run if recent else None
    run_config, note = _usable_config(context, dict(last.run_config) if last else {})
    why = (
        f"replacing dead run {', '.join(replaced)}"
        if replaced
        else f"no unfinished run; previous {last.run_id} ended {last.status.value}"
        if last
        else "no kalshi_ingest run yet"
    )
    if failures:
        why += f"; {failures} failed in a row"
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
    context.log.error(f"kalshi_ingest {detail}")
    path = database_in(run.run_config) or warehouse.path
    try:
        record_feed_event(
            Warehouse(path), "dagster", "run_failed", detail, timeout_s=FEED_EVENT_TIMEOUT_S
        )
    except WarehouseError as exc:
        context.log.warning(f"could not record the failure in {path} (moving on): {exc}")

"""`kalshi-pipeline status [--json]`: is the stream running and storing ticks?

Reads Dagster's own records (the stream run, the age of its newest event, the keep-alive sensor)
through `DagsterInstance.get()` with DAGSTER_HOME (default `./.dagster`), and DuckDB through a
short read-only connection (retried while the stream's writer holds the file). Healthy means a
STARTED `kalshi_ingest` run whose newest event is recent and a tick stored in the last few
minutes; the exit status is 0 then, 1 otherwise (with the reason), 2 when there is nothing to
read. It also asks the exchange (`GET /exchange/status` of the run's environment) for the state
of each matching-engine shard, since a pause may hit one shard and leave the others trading.
It replaces the predecessor's websocket_status.sh and monitor_websocket_performance.sh, which
read the caller's environment and the wrong heartbeat file, and compared New York local time
with UTC (predecessor/review.md §1.2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kalshi_pipeline.warehouse import Warehouse, WarehouseError

DEFAULT_DAGSTER_HOME = Path(".dagster")
DEFAULT_MAX_TICK_AGE_S = 300.0
FEED_EVENTS_SHOWN = 10


@dataclass
class RunInfo:
    run_id: str
    status: str
    mode: str
    mode_from: str  # where `mode` comes from
    launched_by: str
    created_at: str
    newest_event_age_s: float | None
    stale_after_s: float
    database: str | None
    environment: str = "local"
    environment_from: str = "default"
    failure: str | None = None  # why the run failed, from its failure events
    rest_url: str | None = None  # the run's REST URL override, if it set one


@dataclass
class SensorInfo:
    name: str
    state: str  # RUNNING, STOPPED, or "DEFAULT (running)" before the daemon saw it
    last_tick_age_s: float | None = None
    last_tick_status: str | None = None
    last_tick_note: str | None = None
    daemon_heartbeat_age_s: float | None = None


@dataclass
class ShardInfo:
    exchange_index: int
    description: str
    exchange_active: bool | None
    trading_active: bool | None


@dataclass
class ExchangeInfo:
    url: str
    exchange_active: bool
    trading_active: bool
    shards: list[ShardInfo] = field(default_factory=list)


@dataclass
class CoverageInfo:
    covered: float | None  # fraction of the window; None when nothing was recorded in it
    summary: str  # the figures in words, as `status` prints them
    gaps: int
    longest_gap_s: float | None
    longest_gap_reason: str | None
    live: dict[str, float] = field(default_factory=dict)  # per source, fraction live


COVERAGE_WINDOWS = {"last_hour": 3600.0, "last_day": 86400.0}


@dataclass
class Report:
    healthy: bool
    reason: str
    dagster_home: str
    database: str
    run: RunInfo | None = None
    other_unfinished_runs: list[dict[str, str]] = field(default_factory=list)
    # Launchpad/API launches that failed before streaming: the sensor does not relaunch them.
    not_relaunched: list[dict[str, str]] = field(default_factory=list)
    sensor: SensorInfo | None = None
    newest_tick_age_s: float | None = None
    ticks_last_minute: dict[str, int] = field(default_factory=dict)
    landing_backlog_bytes: int | None = None
    feed_events: list[dict[str, str]] = field(default_factory=list)
    # "last_hour" and "last_day": the share of time some feed was live or degraded, and gaps
    coverage: dict[str, CoverageInfo] = field(default_factory=dict)
    exchange: ExchangeInfo | None = None
    problems: list[str] = field(default_factory=list)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _age(ts: float | None, now: float) -> float | None:
    return None if ts is None else round(max(0.0, now - ts), 1)


def _dagster_home(explicit: Path | None) -> Path:
    if explicit is not None:
        home = explicit
    elif os.environ.get("DAGSTER_HOME"):
        home = Path(os.environ["DAGSTER_HOME"])
    else:
        home = DEFAULT_DAGSTER_HOME
    return home.expanduser().resolve()


def _read_dagster(home: Path, report: Report, now: float) -> None:
    import dagster as dg
    from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

    from kalshi_pipeline.defs.ingest import runs

    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        instance = dg.DagsterInstance.get()
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
    with instance:
        records = instance.get_run_records(dg.RunsFilter(job_name=runs.JOB_NAME), limit=20)
        unfinished = [r for r in records if r.dagster_run.status in runs.unfinished()]
        started = [r for r in unfinished if r.dagster_run.status == dg.DagsterRunStatus.STARTED]
        chosen = (started or unfinished or records or [None])[0]
        if chosen is not None:
            run = chosen.dagster_run
            events = instance.get_records_for_run(run.run_id, limit=1, ascending=False).records
            newest = events[0].timestamp if events else None
            mode, mode_from = _configured(
                runs.mode_in(run.run_config), run.tags.get(runs.MODE_TAG), _default_mode
            )
            env, env_from = _configured(
                runs.environment_in(run.run_config),
                run.tags.get(runs.ENVIRONMENT_TAG),
                _default_environment,
            )
            report.run = RunInfo(
                run_id=run.run_id,
                status=run.status.value,
                mode=mode,
                mode_from=mode_from,
                launched_by=run.tags.get("dagster/sensor_name")
                or run.tags.get(runs.LAUNCHED_BY_TAG)
                or "launchpad or API",
                created_at=_iso(chosen.create_timestamp.timestamp()),
                newest_event_age_s=_age(newest, now),
                stale_after_s=runs.stale_after_s(run.run_config),
                database=run.tags.get(runs.DATABASE_TAG) or runs.database_in(run.run_config),
                environment=env,
                rest_url=runs.feed_config(run.run_config).get("rest_url"),
                environment_from=env_from,
                failure=_failure_reason(instance, run.run_id)
                if run.status == dg.DagsterRunStatus.FAILURE
                else None,
            )
            report.other_unfinished_runs = [
                {"run_id": r.dagster_run.run_id, "status": r.dagster_run.status.value}
                for r in unfinished
                if r is not chosen
            ]
        rejected = {run.run_id for run in runs.not_relaunched(r.dagster_run for r in records)}
        report.not_relaunched = [
            {
                "run_id": record.dagster_run.run_id,
                "created_at": _iso(record.create_timestamp.timestamp()),
                "failure": _failure_reason(instance, record.dagster_run.run_id) or "",
            }
            for record in records
            if record.dagster_run.run_id in rejected
        ]
        sensor = SensorInfo(name=runs.SENSOR_NAME, state="DEFAULT (running)")
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.name != runs.SENSOR_NAME:
                continue
            sensor.state = (
                "DEFAULT (running)"
                if state.status == InstigatorStatus.DECLARED_IN_CODE
                else state.status.value
            )
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            if ticks:
                tick = ticks[0]
                sensor.last_tick_age_s = _age(tick.timestamp, now)
                sensor.last_tick_status = tick.status.value
                sensor.last_tick_note = tick.skip_reason or (
                    f"launched {', '.join(tick.run_ids)}"
                    if tick.run_ids
                    else (tick.error.message.strip() if tick.error else None)
                )
        beats = instance.get_daemon_heartbeats()
        beat = beats.get("SENSOR")
        sensor.daemon_heartbeat_age_s = _age(beat.timestamp if beat else None, now)
        report.sensor = sensor


def _configured(
    in_run_config: str | None, recorded: str | None, default: Callable[[], str]
) -> tuple[str, str]:
    """A run setting and where it comes from: the run's config, else what the run recorded when
    it started (the code location's default, from its environment), else this shell's default."""
    if in_run_config:
        return in_run_config, "run config"
    if recorded:
        return recorded, "resource default"
    return default(), "not recorded by the run; this shell's default"


def _failure_reason(instance: Any, run_id: str) -> str | None:
    """Why a run failed, in the words of its failure events: a step's failure (the op's
    `Failure` description, or the error's message), else the run failure's message (the
    keep-alive sensor's verdict for a worker that died)."""
    from dagster import DagsterEventType

    for kind in (DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE):
        records = instance.get_records_for_run(run_id, of_type=kind, ascending=False).records
        for record in records:
            event = record.event_log_entry.dagster_event
            if event is None:
                continue
            data = event.event_specific_data
            user = getattr(data, "user_failure_data", None)
            if user is not None and user.description:
                return str(user.description)
            error = getattr(data, "error", None)
            if error is not None and error.message:
                return _first_line_of_error(error)
            message = event.message or record.event_log_entry.user_message
            if message:
                return str(message)
    return None


def _first_line_of_error(error: Any) -> str:
    cause = error
    while getattr(cause, "cause", None) is not None:  # the user's exception, not the wrapper
        cause = cause.cause
    return str(cause.message).strip().splitlines()[0]


def _default_environment() -> str:
    from kalshi_pipeline.kalshi.errors import KalshiConfigError
    from kalshi_pipeline.kalshi.settings import ENV_VAR, parse_environment

    try:
        return parse_environment(os.environ.get(ENV_VAR)).value
    except KalshiConfigError:
        return "local"


def _default_mode() -> str:
    from kalshi_pipeline.stream.config import StreamConfig

    try:
        return StreamConfig.from_env().mode.value
    except ValueError:
        return "websocket"


def _landing_backlog(landing: Path, positions: dict[str, int]) -> int:
    """Bytes in landing segments not yet loaded into DuckDB."""
    from kalshi_pipeline.stream.landing import list_segments

    total = 0
    for seg in list_segments(landing):
        try:
            size = seg.path.stat().st_size
        except FileNotFoundError:
            continue
        total += max(0, size - positions.get(seg.name, 0))
    return total


def _read_warehouse(path: Path, report: Report, now: float, timeout_s: float) -> None:
    from kalshi_pipeline.warehouse.coverage import coverage_over, stream_serving
    from kalshi_pipeline.warehouse.status import (
        landing_positions,
        recent_feed_events,
        tick_activity,
    )

    alive = stream_serving(path)
    with Warehouse(path).connect(read_only=True, timeout_s=timeout_s) as con:
        activity = tick_activity(con, window_s=60.0)
        events = recent_feed_events(con, FEED_EVENTS_SHOWN)
        positions = landing_positions(con)
        windows = {
            name: coverage_over(con, seconds, stream_alive=alive)
            for name, seconds in COVERAGE_WINDOWS.items()
        }
    for name, cov in windows.items():
        longest = cov.longest
        report.coverage[name] = CoverageInfo(
            covered=None if cov.covered is None else round(cov.covered, 6),
            summary=cov.line("covered"),
            gaps=len(cov.gaps),
            longest_gap_s=None if longest is None else round(longest.seconds, 1),
            longest_gap_reason=None if longest is None else longest.reason,
            live={k: round(v, 6) for k, v in cov.live.items()},
        )
    stored = activity.newest_stored_at_ms
    report.newest_tick_age_s = None if stored is None else _age(stored / 1000, now)
    report.ticks_last_minute = {"websocket": 0, "http": 0, **activity.last_window_by_source}
    report.feed_events = [
        {
            "occurred_at": _iso(e.occurred_at_ms / 1000),
            "source": e.source,
            "kind": e.kind,
            "detail": e.detail,
        }
        for e in events
    ]
    from kalshi_pipeline.warehouse.paths import landing_folder

    report.landing_backlog_bytes = _landing_backlog(landing_folder(path), positions)


def _exchange_settings(report: Report) -> Any:
    """The Kalshi environment the stream run reads (its run config), else the environment's."""
    from kalshi_pipeline.kalshi.settings import KalshiSettings

    run = report.run
    if run is not None:
        return KalshiSettings.for_env(run.environment, rest_url=run.rest_url or None)
    return KalshiSettings.from_env()


def _read_exchange(report: Report, timeout_s: float) -> None:
    from kalshi_pipeline.kalshi.errors import FrameDecodeError, KalshiError
    from kalshi_pipeline.kalshi.rest import RestClient

    try:
        settings = _exchange_settings(report)
    except (KalshiError, ValueError) as exc:
        report.problems.append(f"cannot tell which exchange to ask for its status: {exc}")
        return
    url = f"{settings.rest_url.rstrip('/')}/exchange/status"
    try:
        with RestClient(
            settings,
            sign=False,
            connect_timeout_s=timeout_s,
            read_timeout_s=timeout_s,
            max_retries=0,
        ) as client:
            status = client.get_exchange_status()
    except (KalshiError, FrameDecodeError) as exc:
        report.problems.append(f"exchange status unknown ({url}): {exc}"[:500])
        return
    report.exchange = ExchangeInfo(
        url=url,
        exchange_active=status.exchange_active,
        trading_active=status.trading_active,
        shards=[
            ShardInfo(
                exchange_index=s.exchange_index,
                description=s.description,
                exchange_active=s.exchange_active,
                trading_active=s.trading_active,
            )
            for s in sorted(status.exchange_index_statuses or [], key=lambda s: s.exchange_index)
        ],
    )


def collect(
    dagster_home: Path | None = None,
    database: Path | None = None,
    max_tick_age_s: float = DEFAULT_MAX_TICK_AGE_S,
    db_timeout_s: float = 15.0,
    exchange_timeout_s: float | None = 3.0,
) -> Report:
    now = time.time()
    home = _dagster_home(dagster_home)
    report = Report(healthy=False, reason="", dagster_home=str(home), database="")
    if not home.is_dir():
        report.problems.append(
            f"no Dagster instance at {home}: start the stack with `kalshi-pipeline dev` "
            "(or set DAGSTER_HOME)"
        )
    else:
        try:
            _read_dagster(home, report, now)
        except Exception as exc:  # a damaged or locked instance: report, don't crash
            report.problems.append(f"cannot read Dagster at {home}: {type(exc).__name__}: {exc}")
    from kalshi_pipeline.warehouse.connection import default_path

    run_db = report.run.database if report.run else None
    db = (database or (Path(run_db) if run_db else default_path())).expanduser().resolve()
    report.database = str(db)
    if not db.exists():
        report.problems.append(f"no database at {db} yet: the stream has not stored anything")
    else:
        try:
            _read_warehouse(db, report, now, db_timeout_s)
        except WarehouseError as exc:
            report.problems.append(str(exc))
    if exchange_timeout_s is not None:
        _read_exchange(report, exchange_timeout_s)
    report.healthy, report.reason = _verdict(report, max_tick_age_s)
    return report


def _verdict(report: Report, max_tick_age_s: float) -> tuple[bool, str]:
    run = report.run
    reasons = []
    if run is None:
        reasons.append("no kalshi_ingest run has ever been launched")
    elif run.status != "STARTED":
        reasons.append(
            f"the newest kalshi_ingest run {run.run_id[:8]} is {run.status}"
            + (f" ({run.failure})" if run.failure else "")
        )
    elif run.newest_event_age_s is None or run.newest_event_age_s > run.stale_after_s:
        reasons.append(
            f"run {run.run_id[:8]} is STARTED but silent for {run.newest_event_age_s}s "
            f"(dead after {run.stale_after_s:.0f}s): its worker is probably gone"
        )
    if report.newest_tick_age_s is None:
        reasons.append("no tick stored yet")
    elif report.newest_tick_age_s > max_tick_age_s:
        reasons.append(
            f"the newest tick was stored {report.newest_tick_age_s:.0f}s ago "
            f"(more than {max_tick_age_s:.0f}s)"
        )
    if reasons:
        return False, "; ".join(reasons + report.problems)
    assert run is not None
    return True, (
        f"run {run.run_id[:8]} STARTED, newest event {run.newest_event_age_s:.0f}s ago, "
        f"newest tick stored {report.newest_tick_age_s:.1f}s ago"
    )


def _seconds(value: float | None) -> str:
    if value is None:
        return "never"
    if value < 120:
        return f"{value:.1f}s ago"
    if value < 7200:
        return f"{value / 60:.1f} min ago"
    return f"{value / 3600:.1f} h ago"


def _state(active: bool | None, trading: bool | None) -> str:
    if active is False:
        return "closed"
    if trading is False:
        return "open, trading paused"
    if active is None and trading is None:
        return "unknown"
    return "open, trading"


def render(report: Report) -> str:
    lines = []
    head = "HEALTHY" if report.healthy else "UNHEALTHY"
    lines.append(f"{head}: {report.reason}")
    run = report.run
    if run is None:
        lines.append("stream run   none")
    else:
        lines.append(
            f"stream run   {run.run_id}  {run.status}  newest event "
            f"{_seconds(run.newest_event_age_s)} (dead after {run.stale_after_s:.0f}s)"
        )
        lines.append(
            f"             mode {run.mode} ({run.mode_from}), environment {run.environment} "
            f"({run.environment_from})"
        )
        lines.append(f"             launched by {run.launched_by}, created {run.created_at}")
        if run.failure:
            lines.append(f"             failed: {run.failure}")
    for other in report.other_unfinished_runs:
        lines.append(f"also         {other['run_id']}  {other['status']}")
    for failed in report.not_relaunched:
        lines.append(
            f"not retried  {failed['run_id']} (launched {failed['created_at']}) failed before "
            f"streaming: {failed['failure'] or 'no message'}; the sensor keeps the config that "
            "last streamed: launch it again once fixed"
        )
    per_source = ", ".join(f"{k} {v}" for k, v in sorted(report.ticks_last_minute.items()))
    lines.append(
        f"ticks        newest stored {_seconds(report.newest_tick_age_s)}; "
        f"last minute: {per_source or 'none'}"
    )
    if report.landing_backlog_bytes is not None:
        lines.append(f"landing      {report.landing_backlog_bytes} bytes not yet in DuckDB")
    for n, (name, cov) in enumerate(report.coverage.items()):
        window = name.replace("_", " ")
        lines.append(f"{'coverage' if n == 0 else '':<13}{window:<10} {cov.summary}")
    sensor = report.sensor
    if sensor is not None:
        tick = (
            f"last tick {_seconds(sensor.last_tick_age_s)}: {sensor.last_tick_status}"
            + (f" ({sensor.last_tick_note})" if sensor.last_tick_note else "")
            if sensor.last_tick_status
            else "no tick yet"
        )
        lines.append(f"sensor       {sensor.name} {sensor.state}; {tick}")
        beat = _seconds(sensor.daemon_heartbeat_age_s)
        lines.append(f"             sensor daemon heartbeat {beat}")
    ex = report.exchange
    if ex is not None:
        lines.append(f"exchange     {_state(ex.exchange_active, ex.trading_active)} ({ex.url})")
        for shard in ex.shards:
            state = _state(shard.exchange_active, shard.trading_active)
            lines.append(f"  shard {shard.exchange_index:<4} {state:<20} {shard.description}")
    lines.append(f"database     {report.database}")
    lines.append(f"dagster home {report.dagster_home}")
    for problem in report.problems:
        lines.append(f"problem      {problem}")
    lines.append(f"feed events (newest {FEED_EVENTS_SHOWN}):")
    if not report.feed_events:
        lines.append("  none")
    for e in report.feed_events:
        lines.append(f"  {e['occurred_at']}  {e['source']:<9} {e['kind']:<12} {e['detail']}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--dagster-home",
        type=Path,
        default=None,
        help="Dagster instance folder (default $DAGSTER_HOME, else ./.dagster)",
    )
    parser.add_argument(
        "--database",
        type=Path,
        default=None,
        help="DuckDB file (default: the stream run's, else KALSHI_DUCKDB_PATH or "
        "data/kalshi.duckdb)",
    )
    parser.add_argument(
        "--no-exchange",
        action="store_true",
        help="do not ask the exchange for its per-shard status",
    )
    parser.add_argument(
        "--max-tick-age",
        type=float,
        default=DEFAULT_MAX_TICK_AGE_S,
        metavar="S",
        help="unhealthy when the newest tick is older than this (default %(default)s s)",
    )


def main_from_args(args: argparse.Namespace) -> int:
    report = collect(
        args.dagster_home,
        args.database,
        args.max_tick_age,
        exchange_timeout_s=None if args.no_exchange else 3.0,
    )
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(render(report))
    if report.healthy:
        return 0
    return 2 if report.run is None and report.problems else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kalshi-pipeline status", description=__doc__.splitlines()[0] if __doc__ else None
    )
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

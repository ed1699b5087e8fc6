"""Facts about `kalshi_ingest` runs shared by the op, the sensors, `status` and `dev`.

Names other code relies on, the statuses that count as "not finished", and how old
a run's newest event may be before the run is taken for dead: the op logs an alive line every
`alive_every_s` (op config), so silence for several of those means the worker is gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg

JOB_NAME = "kalshi_ingest"
OP_NAME = "stream_ticks"
SENSOR_NAME = "kalshi_ingest_keepalive"
FAILURE_SENSOR_NAME = "kalshi_ingest_failures"
ASSET_KEY = "raw_ticks"
LOCATION_NAME = "kalshi_pipeline"  # workspace.yaml's location_name
REPOSITORY_NAME = "__repository__"  # what Dagster calls a Definitions object's repository

SHARD_TAG = "kalshi/shard"  # dagster.yaml limits runs to one per value of this tag
SHARD_ALL = "all"
RESTART_OF_TAG = "kalshi/restart_of"
LAUNCHED_BY_TAG = "kalshi/launched_by"
# Added by the op once it knows them, so `status` reads what a run really does.
MODE_TAG = "kalshi/mode"
DATABASE_TAG = "kalshi/database"
ENVIRONMENT_TAG = "kalshi/environment"
# Set by the op once its first ticks are in DuckDB: the keep-alive sensor relaunches only with
# the config of a run that streamed, never with one whose run failed before storing anything.
STREAMED_TAG = "kalshi/streamed"
STREAMED = "true"
# Where the op runs, `host:pid:process start time`: the sensor sees a dead worker on its own host
# at once (psutil), instead of waiting for the run's events to go stale.
WORKER_TAG = "kalshi/worker"
# Set by the op when `rotate_after_s` is up: the keep-alive sensor launches a successor (tagged
# with the run it succeeds), which the run hands over to once the successor's feed is live.
ROTATION_TAG = "kalshi/rotation"
ROTATION_DUE = "due"
SUCCESSOR_OF_TAG = "kalshi/successor_of"

# Listed explicitly: IN_PROGRESS_RUN_STATUSES leaves out QUEUED and NOT_STARTED, and a keep-alive
# built on it launches a second run while the first waits in the queue.
UNFINISHED_NAMES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def unfinished() -> list[dg.DagsterRunStatus]:
    """Every status of a run that has not ended (Dagster is imported only when asked)."""
    import dagster as dg

    return [dg.DagsterRunStatus(name) for name in UNFINISHED_NAMES]


def worker_tag(host: str, pid: int, started: float) -> str:
    return f"{host}:{pid}:{started:.3f}"


def worker_in(tags: Mapping[str, str]) -> tuple[str, int, float] | None:
    """(host, pid, process start time) the op recorded, or None when it recorded none (yet)."""
    value = tags.get(WORKER_TAG)
    if not value:
        return None
    host, _, rest = value.rpartition(":")  # host names never end in a number-colon-number
    host, _, pid = host.rpartition(":")
    try:
        return host, int(pid), float(rest)
    except ValueError:
        return None


def failed_before_streaming(run: dg.DagsterRun) -> bool:
    """A FAILURE run that never stored a tick (the op tags its first stored ticks)."""
    return run.status.value == "FAILURE" and run.tags.get(STREAMED_TAG) != STREAMED


def launched_by_sensor(run: dg.DagsterRun) -> bool:
    return run.tags.get(LAUNCHED_BY_TAG) == SENSOR_NAME


def not_relaunched(newest_first: Iterable[dg.DagsterRun]) -> list[dg.DagsterRun]:
    """The Launchpad or API launches the keep-alive sensor will not relaunch: every one that
    failed before streaming, back to the newest such launch that did not (newest first)."""
    found = []
    for run in newest_first:
        if launched_by_sensor(run):
            continue
        if not failed_before_streaming(run):
            break
        found.append(run)
    return found


DEFAULT_ROTATE_AFTER_S = 6 * 3600.0
DEFAULT_METADATA_EVERY_S = 180.0
DEFAULT_ALIVE_EVERY_S = 60.0
STALE_FACTOR = 4  # a run silent for this many alive intervals is dead
MIN_STALE_S = 30.0


def op_config(run_config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    ops = (run_config or {}).get("ops") or {}
    return (ops.get(OP_NAME) or {}).get("config") or {}


def alive_every_s(run_config: Mapping[str, Any] | None) -> float:
    value = op_config(run_config).get("alive_every_s", DEFAULT_ALIVE_EVERY_S)
    try:
        return float(value)
    except (TypeError, ValueError):
        return DEFAULT_ALIVE_EVERY_S


def stale_after_s(run_config: Mapping[str, Any] | None) -> float:
    """Seconds without a new event after which a STARTED run counts as dead."""
    return max(MIN_STALE_S, STALE_FACTOR * alive_every_s(run_config))


def feed_config(run_config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    resources = (run_config or {}).get("resources") or {}
    return (resources.get("kalshi_feed") or {}).get("config") or {}


def mode_in(run_config: Mapping[str, Any] | None) -> str | None:
    """The feed mode the run config asks for, or None when it takes the resource default."""
    mode = feed_config(run_config).get("mode")
    return str(mode) if mode else None


def database_in(run_config: Mapping[str, Any] | None) -> str | None:
    resources = (run_config or {}).get("resources") or {}
    path = ((resources.get("warehouse") or {}).get("config") or {}).get("path")
    return str(path) if path else None


def environment_in(run_config: Mapping[str, Any] | None) -> str | None:
    """The Kalshi environment the run config asks for, or None for the resource default."""
    env = feed_config(run_config).get("environment")
    return str(env) if env else None

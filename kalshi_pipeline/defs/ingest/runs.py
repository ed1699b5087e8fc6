"""Facts about `kalshi_ingest` runs shared by the op, the sensors, `status` and `dev`.

Names other code relies on (design.md §4), the statuses that count as "not finished", and how old
a run's newest event may be before the run is taken for dead: the op logs an alive line every
`alive_every_s` (op config), so silence for several of those means the worker is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
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

# Listed explicitly: IN_PROGRESS_RUN_STATUSES leaves out QUEUED and NOT_STARTED, and a keep-alive
# built on it launches a second run while the first waits in the queue (dagster-notes.md §2.1).
UNFINISHED_NAMES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def unfinished() -> list[dg.DagsterRunStatus]:
    """Every status of a run that has not ended (Dagster is imported only when asked)."""
    import dagster as dg

    return [dg.DagsterRunStatus(name) for name in UNFINISHED_NAMES]


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

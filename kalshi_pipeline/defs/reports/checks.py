"""Asset checks; each names the offending rows in its metadata when it fails.

The checks on `raw_ticks` are also evaluated by the stream op each time it materializes
`raw_ticks` (see `raw_ticks_evaluations`), so the UI shows results for the newest
materialization rather than "not evaluated" between hourly runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from kalshi_pipeline.defs.ingest.assets import raw_ticks
from kalshi_pipeline.defs.reports.assets import (
    HOUR_S,
    LOCK_WAIT_S,
    coverage_of_last,
    feed_coverage,
    gaps_table,
    market_snapshot,
)
from kalshi_pipeline.defs.resources import WarehouseResource
from kalshi_pipeline.reporting import plain
from kalshi_pipeline.warehouse import reports
from kalshi_pipeline.warehouse.schema import migrate

FRESH_WITHIN_S = 600.0
COVERAGE_SETTING = "KALSHI_COVERAGE_THRESHOLD"
DEFAULT_COVERAGE_THRESHOLD = 0.99


def coverage_threshold() -> float:
    """The least coverage of the last hour the check accepts, a fraction: KALSHI_COVERAGE_THRESHOLD
    (default 0.99)."""
    raw = os.environ.get(COVERAGE_SETTING, "").strip()
    if not raw:
        return DEFAULT_COVERAGE_THRESHOLD
    try:
        value = float(raw.rstrip("%")) / (100 if raw.endswith("%") else 1)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{COVERAGE_SETTING}={raw!r} is not a fraction between 0 and 1: set it to the least "
            "coverage of the last hour you accept, for example 0.99 (or 99%), or unset it for "
            f"the default {DEFAULT_COVERAGE_THRESHOLD}"
        )
    return value


def _rows(rows: list[dict[str, Any]]) -> dg.MetadataValue:
    return dg.MetadataValue.json([{k: plain(v) for k, v in r.items()} for r in rows])


def _fresh(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    age = reports.newest_tick_age_s(con)
    return dg.AssetCheckResult(
        passed=age is not None and age <= FRESH_WITHIN_S,
        metadata={"newest_tick_age_s": -1.0 if age is None else round(age, 1)},
        description="no tick stored yet" if age is None else None,
    )


def _prices_valid(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    count, rows = reports.out_of_range_prices(con)
    return dg.AssetCheckResult(
        passed=count == 0, metadata={"offending_rows": count, "examples": _rows(rows)}
    )


def _no_frame_twice(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    count, rows = reports.frames_stored_twice(con)
    return dg.AssetCheckResult(
        passed=count == 0, metadata={"frames_stored_twice": count, "examples": _rows(rows)}
    )


# The checks on raw_ticks by name: evaluated by the hourly schedule (and on demand in the UI),
# and by the stream op right after each materialization of raw_ticks, so their results in the
# UI always belong to the newest materialization.
RAW_TICKS_CHECKS: dict[str, Callable[[duckdb.DuckDBPyConnection], dg.AssetCheckResult]] = {
    "raw_ticks_fresh": _fresh,
    "raw_ticks_prices_valid": _prices_valid,
    "raw_ticks_no_frame_twice": _no_frame_twice,
}


def raw_ticks_evaluations(con: duckdb.DuckDBPyConnection) -> list[dg.AssetCheckEvaluation]:
    """Every check on raw_ticks, as events the stream op logs beside its materialization."""
    out = []
    for name, check in RAW_TICKS_CHECKS.items():
        result = check(con)
        out.append(
            dg.AssetCheckEvaluation(
                asset_key=raw_ticks.key,
                check_name=name,
                passed=bool(result.passed),
                metadata=result.metadata,
                description=result.description,
            )
        )
    return out


@dg.asset_check(
    asset=raw_ticks.key, description=f"a tick was stored in the last {FRESH_WITHIN_S:.0f} s"
)
def raw_ticks_fresh(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(timeout_s=LOCK_WAIT_S) as con:
        migrate(con)
        return _fresh(con)


@dg.asset_check(asset=raw_ticks.key, description="prices within [0, 1] and bid <= ask")
def raw_ticks_prices_valid(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(timeout_s=LOCK_WAIT_S) as con:
        migrate(con)
        return _prices_valid(con)


@dg.asset_check(asset=raw_ticks.key, description="no landing-log frame stored twice")
def raw_ticks_no_frame_twice(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(timeout_s=LOCK_WAIT_S) as con:
        migrate(con)
        return _no_frame_twice(con)


@dg.asset_check(asset=market_snapshot, description="every active market is in the snapshot")
def snapshot_has_every_active_market(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(timeout_s=LOCK_WAIT_S) as con:
        migrate(con)
        count, rows = reports.active_markets_missing_from_snapshot(con)
    return dg.AssetCheckResult(
        passed=count == 0, metadata={"missing_markets": count, "examples": _rows(rows)}
    )


@dg.asset_check(
    asset=feed_coverage,
    description="coverage of the last hour (the share of time some feed was live or degraded) "
    f"is at least {COVERAGE_SETTING} (default {DEFAULT_COVERAGE_THRESHOLD}); the gaps are "
    "listed when it is not",
)
def feed_coverage_last_hour(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    threshold = coverage_threshold()
    with warehouse.connect(timeout_s=LOCK_WAIT_S) as con:
        migrate(con)
        hour = coverage_of_last(con, HOUR_S, Path(warehouse.path))
    passed = hour.covered is not None and hour.covered >= threshold
    gaps = [g.as_dict() for g in hour.gaps]
    if hour.covered is None:
        description = "no feed was recorded in the last hour: no stream has run"
    elif passed:
        description = hour.headline("hour")
    else:
        listed = "; ".join(
            f"{g['start']} to {g['end'] or 'now'} {g['sources']} {g['reason']}" for g in gaps
        )
        description = (
            f"{hour.headline('hour')} Below the threshold {threshold:g}. Gaps: {listed}"
        )[:2000]
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "coverage_last_hour": -1.0 if hour.covered is None else round(hour.covered, 6),
            "threshold": threshold,
            "gaps": dg.MetadataValue.json(gaps),
            "gaps_table": dg.MetadataValue.md(gaps_table(hour.gaps)),
        },
        description=description,
    )


CHECKS = [
    raw_ticks_fresh,
    raw_ticks_prices_valid,
    raw_ticks_no_frame_twice,
    snapshot_has_every_active_market,
    feed_coverage_last_hour,
]

"""Asset checks; each names the offending rows in its metadata when it fails.

The checks on `raw_ticks` are also evaluated by the stream op each time it materializes
`raw_ticks` (see `raw_ticks_evaluations`), so the UI shows results for the newest
materialization rather than "not evaluated" between hourly runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg
import duckdb

from kalshi_pipeline.defs.ingest.assets import raw_ticks
from kalshi_pipeline.defs.reports.assets import LOCK_WAIT_S, market_snapshot
from kalshi_pipeline.defs.resources import WarehouseResource
from kalshi_pipeline.reporting import plain
from kalshi_pipeline.warehouse import reports
from kalshi_pipeline.warehouse.schema import migrate

FRESH_WITHIN_S = 600.0


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


CHECKS = [
    raw_ticks_fresh,
    raw_ticks_prices_valid,
    raw_ticks_no_frame_twice,
    snapshot_has_every_active_market,
]

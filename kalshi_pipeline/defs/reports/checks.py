"""Asset checks; each names the offending rows in its metadata when it fails."""

from __future__ import annotations

from typing import Any

import dagster as dg

from kalshi_pipeline.defs.ingest.assets import raw_ticks
from kalshi_pipeline.defs.reports.assets import LOCK_WAIT_S, market_snapshot
from kalshi_pipeline.defs.resources import WarehouseResource
from kalshi_pipeline.reporting import plain
from kalshi_pipeline.warehouse import reports
from kalshi_pipeline.warehouse.schema import migrate

FRESH_WITHIN_S = 600.0


def _rows(rows: list[dict[str, Any]]) -> dg.MetadataValue:
    return dg.MetadataValue.json([{k: plain(v) for k, v in r.items()} for r in rows])


@dg.asset_check(
    asset=raw_ticks.key, description=f"a tick was stored in the last {FRESH_WITHIN_S:.0f} s"
)
def raw_ticks_fresh(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(timeout_s=LOCK_WAIT_S) as con:
        migrate(con)
        age = reports.newest_tick_age_s(con)
    return dg.AssetCheckResult(
        passed=age is not None and age <= FRESH_WITHIN_S,
        metadata={"newest_tick_age_s": -1.0 if age is None else round(age, 1)},
        description="no tick stored yet" if age is None else None,
    )


@dg.asset_check(asset=raw_ticks.key, description="prices within [0, 1] and bid <= ask")
def raw_ticks_prices_valid(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(timeout_s=LOCK_WAIT_S) as con:
        migrate(con)
        count, rows = reports.out_of_range_prices(con)
    return dg.AssetCheckResult(
        passed=count == 0, metadata={"offending_rows": count, "examples": _rows(rows)}
    )


@dg.asset_check(asset=raw_ticks.key, description="no landing-log frame stored twice")
def raw_ticks_no_frame_twice(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(timeout_s=LOCK_WAIT_S) as con:
        migrate(con)
        count, rows = reports.frames_stored_twice(con)
    return dg.AssetCheckResult(
        passed=count == 0, metadata={"frames_stored_twice": count, "examples": _rows(rows)}
    )


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

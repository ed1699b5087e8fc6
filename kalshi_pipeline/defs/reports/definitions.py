"""Report definitions: the assets, their checks, and the hourly schedule that builds them."""

from __future__ import annotations

import dagster as dg

from kalshi_pipeline.defs.ingest.assets import raw_ticks
from kalshi_pipeline.defs.reports.assets import (
    GROUP,
    feed_comparison_report,
    feed_coverage,
    feed_latency_comparison,
    feed_storage_comparison,
    market_snapshot,
)
from kalshi_pipeline.defs.reports.checks import CHECKS

feed_comparison_schedule = dg.ScheduleDefinition(
    name="feed_comparison_schedule",
    target=dg.AssetSelection.groups(GROUP) | dg.AssetSelection.checks_for_assets(raw_ticks.key),
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: snapshot, storage and latency comparisons, feed coverage, the report.",
)

defs = dg.Definitions(
    assets=[
        market_snapshot,
        feed_storage_comparison,
        feed_latency_comparison,
        feed_coverage,
        feed_comparison_report,
    ],
    asset_checks=CHECKS,
    schedules=[feed_comparison_schedule],
)

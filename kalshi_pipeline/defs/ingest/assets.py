"""`raw_ticks`: the `ticks` table, written by the stream job rather than materialized by Dagster.

An external AssetSpec: the stream op reports a materialization every few minutes with numeric
metadata (plotted by the UI), and the time-window freshness policy turns "no report lately" into
the asset's health. With run status, that is the heartbeat.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from kalshi_pipeline.defs.ingest.runs import ASSET_KEY

FRESHNESS_WARN = timedelta(minutes=5)
FRESHNESS_FAIL = timedelta(minutes=10)

raw_ticks = dg.AssetSpec(
    ASSET_KEY,
    description="Ticks stored in DuckDB table `ticks` by the kalshi_ingest stream (one row per "
    "market update; source websocket or http). Materializations come from the running stream.",
    kinds={"duckdb"},
    group_name="ingest",
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=FRESHNESS_FAIL, warn_window=FRESHNESS_WARN
    ),
    metadata={"table": "ticks"},
)

# Metadata keys the op reports under, every time (the UI plots each key over time).
METADATA_KEYS = (
    "rows_stored",
    "ticks_per_s",
    "lag_p50_ms",
    "lag_p99_ms",
    "reconnects",
    "fallback_s",
    "backlog_bytes",
)

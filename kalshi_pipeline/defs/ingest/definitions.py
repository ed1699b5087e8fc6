"""The stream's definitions: job, sensors and the external `raw_ticks` asset."""

from __future__ import annotations

import dagster as dg

from kalshi_pipeline.defs.ingest.assets import raw_ticks
from kalshi_pipeline.defs.ingest.jobs import kalshi_ingest_job
from kalshi_pipeline.defs.ingest.sensors import kalshi_ingest_failures, kalshi_ingest_keepalive

defs = dg.Definitions(
    assets=[raw_ticks],
    jobs=[kalshi_ingest_job],
    sensors=[kalshi_ingest_keepalive, kalshi_ingest_failures],
)

"""Dagster entry point (`kalshi_pipeline.definitions`, object `defs`), loaded by workspace.yaml.

It only merges: each domain under `defs/` assembles its own `definitions.py`. To add one, import
its `defs` here and add it to the merge.
"""

from __future__ import annotations

import dagster as dg

from kalshi_pipeline.defs import resources
from kalshi_pipeline.defs.ingest import definitions as ingest
from kalshi_pipeline.defs.reports import definitions as reports

defs = dg.Definitions.merge(
    resources.defs,
    ingest.defs,
    reports.defs,
)

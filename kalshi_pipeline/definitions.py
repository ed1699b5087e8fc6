"""Dagster entry point (`kalshi_pipeline.definitions`, object `defs`), loaded by workspace.yaml.

It only merges: each domain under `defs/` assembles its own `definitions.py`. To add one, import
its `defs` here and add it to the merge.
"""

from __future__ import annotations

import warnings

import dagster as dg

from kalshi_pipeline.defs import resources
from kalshi_pipeline.defs.ingest import definitions as ingest
from kalshi_pipeline.defs.reports import definitions as reports

# Dagster 1.13 itself passes `owners=None` when it binds resources to a sensor and then warns
# that the parameter is in beta, in every process that loads these definitions: not ours to fix.
warnings.filterwarnings(
    "ignore",
    message="Parameter `owners` of initializer `SensorDefinition.__init__`",
    category=dg.BetaWarning,
)

defs = dg.Definitions.merge(
    resources.defs,
    ingest.defs,
    reports.defs,
)

"""Dagster entry point (`kalshi_pipeline.definitions`, object `defs`), loaded by workspace.yaml."""

from __future__ import annotations

import dagster as dg

defs = dg.Definitions()

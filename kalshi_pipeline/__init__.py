"""Kalshi market data into DuckDB, orchestrated by Dagster."""

"""Kalshi Trade API v2 protocol layer: settings, auth, REST and WebSocket clients, messages.

Free of Dagster and DuckDB so that the engine, the CLI and the simulator's tests can use it alone.
"""

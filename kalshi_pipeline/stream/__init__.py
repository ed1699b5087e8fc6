"""The stream engine: feeds (WebSocket, HTTP polling), supervisor, landing log and writer.

Free of Dagster: the Dagster op, the CLI and the benchmarks all call `run_engine` / `Engine`.
"""

"""The Dagster layer: resources, the stream job and its sensors, one folder per domain.

`kalshi_pipeline.definitions` merges each domain's `definitions.py`; a new domain (reports) adds a
folder with its own `definitions.py` and one line there.
"""

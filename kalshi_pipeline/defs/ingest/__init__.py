"""The stream: job `kalshi_ingest`, its keep-alive and failure sensors, the `raw_ticks` asset."""

"""Local Kalshi exchange simulator: REST under /trade-api/v2 and WebSocket at /trade-api/ws/v2 on
one port, held to kalshi-protocol.md. Run it with `python -m kalshi_pipeline.simulator` or
`kalshi-pipeline simulate`; from tests, use `process.SimulatorProcess`."""

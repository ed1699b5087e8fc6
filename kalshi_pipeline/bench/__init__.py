"""Benchmarks and chaos: the target figures, measured against the simulator in processes of
their own (`kalshi-pipeline bench`). Each scenario is a module; `suite.py` runs them,
`report.py` judges the figures and writes the README section."""

"""`python -m kalshi_pipeline.bench`: the same as `kalshi-pipeline bench`."""

import sys

from kalshi_pipeline.bench.cli import main

sys.exit(main())

"""`python -m kalshi_pipeline.simulator [flags]`."""

import sys

from kalshi_pipeline.simulator.server import main

sys.exit(main())

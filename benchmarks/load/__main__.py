"""`python -m benchmarks.load`: see benchmarks/load/cli.py."""

import sys

from benchmarks.load.cli import main

sys.exit(main())

#!/usr/bin/env python3
"""BIDS App entry point: ``run.py BIDS_DIR OUTPUT_DIR {participant,group} [options]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lumbo_bids.cli.run import main

if __name__ == "__main__":
    sys.exit(main())

"""Entry point for `python -m gateway.bench`."""

from __future__ import annotations

import sys

from gateway.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""The performance benchmark: `python -m gateway.bench` (see docs/performance.md)."""

"""Small statistics for paired pass/fail results and latencies, exact and dependency-free."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for `b` and `c` discordant pairs.

    Under "no difference" each discordant pair goes either way with probability 1/2, so the
    smaller count is binomial(b + c, 1/2); the p-value doubles its tail, capped at 1.
    """
    if b < 0 or c < 0:
        raise ValueError("counts must not be negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least `pct`% of values at or below."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None

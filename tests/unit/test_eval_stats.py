"""Exact McNemar p-values and latency percentiles."""

from __future__ import annotations

import pytest

from gateway.eval.stats import mcnemar_exact, mean, percentile, rate


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 6, 0.03125),
        (6, 0, 0.03125),
        (1, 1, 1.0),
        (0, 0, 1.0),
        (0, 5, 0.0625),
        (1, 9, 0.021484375),
        (2, 8, 0.109375),
        (0, 16, 2 / 2**16),
        (10, 10, 1.0),
    ],
)
def test_mcnemar_exact_two_sided_p_value_matches_binomial_tail(
    b: int, c: int, expected: float
) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_exact_with_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        mcnemar_exact(-1, 3)


def test_percentile_nearest_rank_picks_an_observed_value() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 95) == 19.0
    assert percentile(values, 50) == 10.0
    assert percentile([7.0], 95) == 7.0


def test_statistics_of_nothing_are_none() -> None:
    assert percentile([], 95) is None
    assert mean([]) is None
    assert rate(3, 0) is None


def test_mean_and_rate_of_values() -> None:
    assert mean([1.0, 2.0, 6.0]) == 3.0
    assert rate(1, 4) == 0.25

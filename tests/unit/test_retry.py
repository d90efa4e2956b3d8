"""Retry policy: which answers are retried, how long the gateway waits, the retry budget."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import RetryConfig
from gateway.retry import RetryBudget, Verdict, backoff_s, retry_after_s, verdict_for_status

NOW = 1_700_000_000.0  # a fixed Unix time for HTTP-date Retry-After values
QUOTA_BODY = (
    b'{"error": {"message": "out", "type": "insufficient_quota", "code": "insufficient_quota"}}'
)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_transient_status_is_retried(status: int) -> None:
    assert verdict_for_status(status, {}, b"{}") is Verdict.RETRY


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_request_error_is_final_even_if_provider_says_retry(status: int) -> None:
    assert verdict_for_status(status, {"x-should-retry": "true"}, b"{}") is Verdict.FINAL


def test_429_out_of_quota_is_not_retried_but_may_fall_back() -> None:
    assert verdict_for_status(429, {}, QUOTA_BODY) is Verdict.NEXT_TARGET


def test_429_with_quota_word_elsewhere_is_still_retried() -> None:
    body = b'{"error": {"message": "not insufficient_quota", "code": "rate_limit_exceeded"}}'
    assert verdict_for_status(429, {}, body) is Verdict.RETRY


def test_provider_saying_should_retry_false_stops_retries_of_that_target() -> None:
    assert verdict_for_status(503, {"x-should-retry": "false"}, b"") is Verdict.NEXT_TARGET


def test_unlisted_status_is_retried_only_when_provider_says_so() -> None:
    assert verdict_for_status(418, {}, b"") is Verdict.FINAL
    assert verdict_for_status(418, {"x-should-retry": "true"}, b"") is Verdict.RETRY
    assert verdict_for_status(501, {}, b"") is Verdict.NEXT_TARGET


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after_s({"retry-after-ms": "150", "retry-after": "5"}, NOW) == 0.15


def test_retry_after_in_seconds_may_be_fractional() -> None:
    assert retry_after_s({"retry-after": "2"}, NOW) == 2.0
    assert retry_after_s({"retry-after": " 0.5 "}, NOW) == 0.5


def test_retry_after_as_http_date_is_the_time_until_then() -> None:
    headers = {"retry-after": "Tue, 14 Nov 2023 22:13:30 GMT"}  # NOW + 10 s
    assert retry_after_s(headers, NOW) == pytest.approx(10.0)


def test_retry_after_date_in_the_past_means_no_wait() -> None:
    assert retry_after_s({"retry-after": "Tue, 14 Nov 2023 22:00:00 GMT"}, NOW) == 0.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"retry-after": "soon"},
        {"retry-after": "-3"},
        {"retry-after": "inf"},
        {"retry-after": "nan"},
        {"retry-after-ms": "abc"},
        {"retry-after": "Tue, 14 Nov 2023 22:13:30"},  # no zone
        {"retry-after": "Tue, 99 Nov 2023 99:13:30 GMT"},
    ],
)
def test_absent_or_malformed_retry_after_is_none(headers: dict[str, str]) -> None:
    assert retry_after_s(headers, NOW) is None


def test_malformed_retry_after_ms_falls_back_to_retry_after() -> None:
    assert retry_after_s({"retry-after-ms": "x", "retry-after": "3"}, NOW) == 3.0


@given(ms=st.text(max_size=40), seconds=st.text(max_size=40))
def test_retry_after_never_raises(ms: str, seconds: str) -> None:
    wait = retry_after_s({"retry-after-ms": ms, "retry-after": seconds}, NOW)
    assert wait is None or wait >= 0


def test_backoff_is_full_jitter_below_a_doubling_ceiling() -> None:
    config = RetryConfig(base_s=0.5, max_s=8.0)
    rng = random.Random(7)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (9, 8.0)]:
        waits = [backoff_s(config, retry, rng) for _ in range(200)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8  # the whole range is used, not just its start


def test_backoff_of_a_huge_retry_number_stays_at_the_cap() -> None:
    assert backoff_s(RetryConfig(base_s=1.0, max_s=2.0), 10_000, random.Random(1)) <= 2.0


def test_retry_budget_allows_at_least_three_retries_in_flight() -> None:
    budget = RetryBudget()
    budget.enter()
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]


def test_retry_budget_is_twenty_percent_of_active_requests() -> None:
    budget = RetryBudget()
    for _ in range(100):
        budget.enter()
    granted = sum(budget.try_acquire() for _ in range(50))
    assert granted == 20


def test_retry_budget_slot_is_free_again_after_release() -> None:
    budget = RetryBudget()
    for _ in range(3):
        assert budget.try_acquire()
    assert not budget.try_acquire()
    budget.release()
    assert budget.try_acquire()

"""Retry policy: which provider answers are retried, and how long to wait before the next try."""

from __future__ import annotations

import email.utils
import enum
import math
import random
from collections.abc import Callable, Mapping

import orjson

from gateway.config import RetryConfig


class Verdict(enum.Enum):
    """What a failed attempt allows next."""

    RETRY = "retry"  # try the same target again (after a wait)
    NEXT_TARGET = "next_target"  # not this target again, but a fallback may answer
    FINAL = "final"  # the answer goes to the client as it is


# The statuses the official SDKs retry, plus Anthropic's 529 "overloaded".
RETRIABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# The request itself is wrong: no retry and no fallback can change the answer.
CLIENT_ERROR_STATUSES = frozenset({400, 401, 403, 404, 422})
QUOTA_CODE = "insufficient_quota"


def verdict_for_status(status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
    """Classify a provider error answer (status >= 400)."""
    if status in CLIENT_ERROR_STATUSES:
        return Verdict.FINAL
    should_retry = headers.get("x-should-retry", "").strip().lower()
    if status in RETRIABLE_STATUSES:
        # An empty account or a provider that says "do not retry" will not change its mind
        # within this request, but another target (account, provider, model) may answer.
        if should_retry == "false" or (status == 429 and out_of_quota(body)):
            return Verdict.NEXT_TARGET
        return Verdict.RETRY
    if should_retry == "true":
        return Verdict.RETRY
    return Verdict.NEXT_TARGET if status >= 500 else Verdict.FINAL


def out_of_quota(body: bytes) -> bool:
    """Whether an error body says the account has no quota left (OpenAI's code or type)."""
    if QUOTA_CODE.encode() not in body:
        return False
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    if not isinstance(error, dict):
        return False
    return QUOTA_CODE in (error.get("code"), error.get("type"))


def retry_after_s(headers: Mapping[str, str], now: float) -> float | None:
    """The wait a provider asks for: `retry-after-ms` first, then `Retry-After` in seconds or
    as an HTTP date (`now` is the Unix time). None when absent or malformed; never raises."""
    millis = _finite(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return seconds
    return _http_date_wait(value, now)


def _finite(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _http_date_wait(value: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less date is read as such
        return None
    return max(0.0, when.timestamp() - now)


def backoff_s(config: RetryConfig, retry_number: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max_s, base_s * 2^(n-1))]."""
    exponent = min(retry_number - 1, 60)  # 2^60 seconds is already past any cap
    ceiling = min(config.max_s, config.base_s * 2.0**exponent)
    return rng.uniform(0.0, ceiling)


class RetryBudget:
    """Envoy's retry budget for one provider: retries in flight may not exceed
    max(ratio x active requests, minimum), so a provider that is down for everyone gets at
    most that many extra requests at a time instead of every request's retries."""

    def __init__(self, ratio: float = 0.2, minimum: int = 3) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self.active = 0
        self.retries_in_flight = 0

    def enter(self) -> None:
        self.active += 1

    def exit(self) -> None:
        self.active -= 1

    def limit(self) -> int:
        return max(int(self.active * self.ratio), self.minimum)

    def try_acquire(self) -> bool:
        if self.retries_in_flight >= self.limit():
            return False
        self.retries_in_flight += 1
        return True

    def release(self) -> None:
        self.retries_in_flight -= 1


class RetryBudgets:
    """One budget per provider name, created on first use."""

    def __init__(self, factory: Callable[[], RetryBudget] = RetryBudget) -> None:
        self._factory = factory
        self._budgets: dict[str, RetryBudget] = {}

    def for_provider(self, name: str) -> RetryBudget:
        budget = self._budgets.get(name)
        if budget is None:
            budget = self._budgets[name] = self._factory()
        return budget

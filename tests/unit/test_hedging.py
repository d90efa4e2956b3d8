"""Hedged attempts: a second try after a delay, the first success wins, the loser is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from gateway.hedging import hedged


class Probe:
    """A fake attempt: answers `value` (or raises `error`) after `delay_s`; notes a cancel."""

    def __init__(self, value: str, delay_s: float, error: Exception | None = None) -> None:
        self.value, self.delay_s, self.error = value, delay_s, error
        self.started = self.cancelled = False

    def __call__(self) -> Awaitable[str]:
        return self._run()

    async def _run(self) -> str:
        self.started = True
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        return self.value


async def _race(first: Probe, second: Probe, discarded: list[str] | None = None) -> tuple[str, int]:
    hedges: list[bool] = []
    out = discarded if discarded is not None else []
    result = await hedged(first, second, 0.05, lambda: hedges.append(True), out.append)
    assert len(hedges) == int(second.started)
    return result


async def test_fast_first_attempt_starts_no_hedge() -> None:
    first, second = Probe("a", 0.0), Probe("b", 0.0)
    assert await _race(first, second) == ("a", 0)
    assert not second.started


async def test_slow_first_attempt_loses_to_the_hedge_and_is_cancelled() -> None:
    first, second = Probe("a", 5.0), Probe("b", 0.01)
    assert await _race(first, second) == ("b", 1)
    assert first.cancelled


async def test_first_attempt_still_wins_if_it_answers_before_the_hedge() -> None:
    first, second = Probe("a", 0.1), Probe("b", 5.0)
    assert await _race(first, second) == ("a", 0)
    assert second.cancelled


async def test_failed_first_attempt_waits_for_the_hedge() -> None:
    first, second = Probe("a", 0.06, RuntimeError("a failed")), Probe("b", 0.1)
    assert await _race(first, second) == ("b", 1)


async def test_when_both_fail_the_first_attempts_error_is_raised() -> None:
    first = Probe("a", 0.1, RuntimeError("a failed"))
    second = Probe("b", 0.0, RuntimeError("b failed"))
    with pytest.raises(RuntimeError, match="a failed"):
        await _race(first, second)


async def test_cancelling_the_caller_cancels_both_attempts() -> None:
    first, second = Probe("a", 5.0), Probe("b", 5.0)
    task = asyncio.ensure_future(_race(first, second))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert first.cancelled
    assert second.cancelled


async def test_a_loser_that_answered_as_the_cancel_arrived_is_discarded() -> None:
    async def answers_when_cancelled() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "a"  # like a response fully read just as the cancel came
        return "late"

    async def instant() -> str:
        return "b"

    discarded: list[str] = []
    result = await hedged(answers_when_cancelled, instant, 0.05, lambda: None, discarded.append)
    assert result == ("b", 1)
    assert discarded == ["a"]

"""Hedged attempts: a second try starts when the first is slow; the first answer wins."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def hedged(
    first: Callable[[], Awaitable[T]],
    second: Callable[[], Awaitable[T]],
    after_s: float,
    on_hedge: Callable[[], None],
    discard: Callable[[T], None],
) -> tuple[T, int]:
    """Run `first`; if it has not finished after `after_s`, run `second` beside it. Returns
    the first success and its index (0 or 1); the other is cancelled, or discarded when it
    succeeded too. When both fail, `first`'s exception is raised."""
    tasks: list[asyncio.Future[T]] = [asyncio.ensure_future(first())]
    winner: asyncio.Future[T] | None = None
    try:
        done, _ = await asyncio.wait(tasks, timeout=after_s)
        if done:
            winner = tasks[0]
            return tasks[0].result(), 0
        on_hedge()
        tasks.append(asyncio.ensure_future(second()))
        winner = await _first_success(tasks)
        return winner.result(), tasks.index(winner)
    finally:
        await _stop_others(tasks, winner, discard)


async def _first_success(tasks: list[asyncio.Future[T]]) -> asyncio.Future[T]:
    pending = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:  # in start order, so a tie goes to the first attempt
            if task.done() and not task.cancelled() and task.exception() is None:
                return task
    return tasks[0]  # every one failed: its result() raises the first attempt's error


async def _stop_others(
    tasks: list[asyncio.Future[T]],
    winner: asyncio.Future[T] | None,
    discard: Callable[[T], None],
) -> None:
    """Cancel the losers and wait for them, so their connections are closed before we go on;
    a loser that succeeded before the cancel reached it is discarded."""
    others = [task for task in tasks if task is not winner]
    for task in others:
        task.cancel()
    # return_exceptions: the losers' errors are collected here, while a cancel of this
    # request itself still propagates.
    results = await asyncio.gather(*others, return_exceptions=True)
    for result in results:
        if not isinstance(result, BaseException):
            discard(result)

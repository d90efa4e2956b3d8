"""Checks a stage starts before the upstream call, which later stages see passed before answering.

The limits stage starts its reservation and lets the request go on at once, so that the cache
stage's read is sent to the store in the same round trip (the store client coalesces the
commands of one event-loop turn). Every stage that answers a request itself (the cache with a
stored answer, the upstream stage with the provider's) first awaits `passed`, which raises the
check's refusal (429, 503) if there is one: nothing is served before the verdict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from gateway.context import RequestContext

T = TypeVar("T")


def open_gate(ctx: RequestContext, check: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Start `check` now; `passed` waits for it. One gate per request."""
    task = asyncio.get_running_loop().create_task(check)
    ctx.gate = task
    return task


async def passed(ctx: RequestContext) -> None:
    """Wait for the request's check, if one was started; raises what the check raised.

    Shielded: a request cancelled here (its client gone) must not cancel the check, whose
    result its settlement needs.
    """
    task = ctx.gate
    if task is not None:
        await asyncio.shield(task)

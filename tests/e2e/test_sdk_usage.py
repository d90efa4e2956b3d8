"""Usage is read from every stream for billing, without the client seeing anything it did
not ask for (checked with the official openai SDK)."""

from __future__ import annotations

import asyncio

from openai import AsyncOpenAI

from gateway.accounting import local_periods
from gateway.store.accounting import ACCOUNTING
from tests.conftest import Stack

MESSAGES = [{"role": "user", "content": "count my tokens"}]


async def _month_cost(stack: Stack) -> int:
    for _ in range(50):  # the statistics are summed in memory and written a moment later
        stats = await stack.app[ACCOUNTING].stats(local_periods()[1])
        if stats.get("all:cost"):
            return stats["all:cost"]
        await asyncio.sleep(0.02)
    return 0


async def test_stream_without_include_usage_shows_no_usage_yet_is_billed(
    gateway_stack: Stack,
) -> None:
    async with AsyncOpenAI(base_url=f"{gateway_stack.url}/v1", api_key=gateway_stack.key) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
        )
        chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    assert all("usage" not in chunk.model_dump(exclude_unset=True) for chunk in chunks)
    sent = gateway_stack.mock.requests[0].json()
    assert sent["stream_options"] == {"include_usage": True}
    assert await _month_cost(gateway_stack) > 0


async def test_stream_with_include_usage_keeps_the_usage_chunk(gateway_stack: Stack) -> None:
    async with AsyncOpenAI(base_url=f"{gateway_stack.url}/v1", api_key=gateway_stack.key) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert gateway_stack.mock.requests[0].body.count(b"include_usage") == 1

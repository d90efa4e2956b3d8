"""The official anthropic SDK, pointed at a running gateway, works as against the provider."""

from __future__ import annotations

import anthropic
import pytest
from anthropic import AsyncAnthropic

from tests.conftest import KEY_B, Stack

MESSAGES: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Hello Claude"}]


def _client(stack: Stack, key: str | None = None) -> AsyncAnthropic:
    return AsyncAnthropic(base_url=stack.url, api_key=key or stack.key, max_retries=0)


async def test_message(gateway_stack: Stack) -> None:
    async with _client(gateway_stack) as client:
        message = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES
        )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Mock answer: Hello Claude"
    assert message.usage.output_tokens > 0


async def test_message_stream(gateway_stack: Stack) -> None:
    async with (
        _client(gateway_stack) as client,
        client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES
        ) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Mock answer: Hello Claude"
    assert final.stop_reason == "end_turn"


async def test_count_tokens(gateway_stack: Stack) -> None:
    async with _client(gateway_stack) as client:
        count = await client.messages.count_tokens(model="claude-haiku-4-5", messages=MESSAGES)
    assert count.input_tokens > 0


async def test_unknown_key_raises_authentication_error(gateway_stack: Stack) -> None:
    async with _client(gateway_stack, key="gk-nope") as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)


async def test_route_not_allowed_raises_permission_denied(gateway_stack: Stack) -> None:
    async with _client(gateway_stack, key=KEY_B) as client:
        with pytest.raises(anthropic.PermissionDeniedError):
            await client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)


async def test_unknown_model_raises_not_found(gateway_stack: Stack) -> None:
    async with _client(gateway_stack) as client:
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(model="gemini-pro", max_tokens=5, messages=MESSAGES)


async def test_missing_model_raises_bad_request(gateway_stack: Stack) -> None:
    async with _client(gateway_stack) as client:
        with pytest.raises(anthropic.BadRequestError):
            await client.post("/v1/messages", body={"messages": []}, cast_to=object)

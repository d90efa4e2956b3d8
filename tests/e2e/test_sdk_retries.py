"""The official SDKs' own retries do not multiply the gateway's upstream attempts."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.mock import MockState, ScriptStep
from tests.conftest import KEY_A, sha

RETRY = {"attempts": 3, "base_s": 0.01, "max_s": 0.02}
KEYS = [{"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"]}]
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def gateway_url(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    make_config: Callable[..., GatewayConfig],
) -> str:
    routes = [
        {"name": "chat", "match": {"path": "/v1/chat/*"}, "provider": "openai", "retry": RETRY},
        {
            "name": "claude",
            "match": {"path": "/v1/messages"},
            "provider": "anthropic",
            "retry": RETRY,
        },
    ]
    server = await aiohttp_server(create_app(make_config(routes=routes, keys=KEYS)))
    return str(server.make_url("")).rstrip("/")


async def test_openai_sdk_default_retries_do_not_multiply_attempts_on_503(
    gateway_url: str, mock: MockState
) -> None:
    mock.push([ScriptStep(status=503)] * 20)
    async with openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=KEY_A) as client:
        assert client.max_retries == 2  # the SDK's default: it would try 3 times
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 503
    assert info.value.response.headers["x-should-retry"] == "false"
    assert info.value.response.headers["x-gateway-attempts"] == "3"
    assert len(mock.requests) == 3


async def test_anthropic_sdk_default_retries_do_not_multiply_attempts_on_529(
    gateway_url: str, mock: MockState
) -> None:
    mock.push([ScriptStep(status=529, error_code="overloaded_error")] * 20)
    async with anthropic.AsyncAnthropic(base_url=gateway_url, api_key=KEY_A) as client:
        with pytest.raises(anthropic.APIStatusError) as info:
            await client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES)
    assert info.value.status_code == 529
    assert len(mock.requests) == 3


async def test_openai_sdk_gets_long_retry_after_429_at_once_and_does_not_retry(
    gateway_url: str, mock: MockState
) -> None:
    mock.push([ScriptStep(status=429, headers={"Retry-After": "300"})] * 5)
    started = time.monotonic()
    async with openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=KEY_A) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert time.monotonic() - started < 2.0
    assert info.value.response.headers["retry-after"] == "300"
    assert len(mock.requests) == 1


async def test_openai_sdk_timeout_gets_the_gateways_504_before_its_own_timer(
    gateway_url: str, mock: MockState
) -> None:
    mock.push([ScriptStep(latency_s=5.0)] * 5)
    async with openai.AsyncOpenAI(
        base_url=f"{gateway_url}/v1", api_key=KEY_A, timeout=1.0
    ) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    # A 504 with x-should-retry: false, not an SDK timeout followed by two more tries.
    assert info.value.status_code == 504
    assert len(mock.requests) == 1


async def test_openai_sdk_call_succeeds_after_gateway_retries(
    gateway_url: str, mock: MockState
) -> None:
    mock.push([ScriptStep(status=502), ScriptStep(status=500)])
    async with openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=KEY_A) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
    assert raw.headers["x-gateway-attempts"] == "3"
    assert raw.parse().choices[0].message.content == "Mock answer: hi"
    assert len(mock.requests) == 3

"""The official SDKs read cached answers as they read the provider's: a streamed answer comes
back whole, a whole answer comes back streamed, tool calls included."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.mock import MockState
from tests.conftest import KEY_A, PROVIDER_KEY
from tests.integration.test_cache import cache_config

Server = Callable[..., Awaitable[TestServer]]
MESSAGES: list[Any] = [{"role": "user", "content": "Hello there"}]


async def start_gateway(aiohttp_server: Server, config: GatewayConfig) -> str:
    server = await aiohttp_server(create_app(config))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def url(
    aiohttp_server: Server, make_config: Callable[..., GatewayConfig], store_url: str
) -> str:
    return await start_gateway(aiohttp_server, make_config(**cache_config(store_url)))


@pytest.fixture
async def sampled_url(
    aiohttp_server: Server, make_config: Callable[..., GatewayConfig], store_url: str
) -> str:
    """Routes that also cache sampled answers: the anthropic SDK sends no temperature, so
    its requests use the provider's default sampling."""
    config = make_config(**cache_config(store_url, cache_nondeterministic=True))
    return await start_gateway(aiohttp_server, config)


def openai_client(url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY_A, max_retries=0)


def anthropic_client(url: str) -> AsyncAnthropic:
    return AsyncAnthropic(base_url=url, api_key=KEY_A, max_retries=0)


async def test_openai_stream_miss_then_whole_hit(url: str, mock: MockState) -> None:
    async with openai_client(url) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0, stream=True
        )
        parts = [c.choices[0].delta.content or "" async for c in raw.parse() if c.choices]
        hit = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0
        )
    answer = hit.parse()
    assert (raw.headers["x-gateway-cache"], hit.headers["x-gateway-cache"]) == ("MISS", "HIT")
    assert answer.choices[0].message.content == "".join(parts) == "Mock answer: Hello there"
    assert answer.usage is not None
    assert answer.usage.completion_tokens > 0
    assert len(mock.requests) == 1


async def test_openai_whole_miss_then_stream_hit_with_usage(url: str, mock: MockState) -> None:
    async with openai_client(url) as client:
        whole = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0
        )
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in raw.parse()]
    assert raw.headers["x-gateway-cache"] == "HIT"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage == whole.usage
    assert len(mock.requests) == 1


def wire(message: Any) -> dict[str, Any]:
    """A message as the wire carried it (the stream helper returns its own parsed type)."""
    dumped: dict[str, Any] = message.model_dump(exclude_none=True)
    return dumped


async def test_anthropic_stream_miss_then_whole_hit(sampled_url: str, mock: MockState) -> None:
    async with anthropic_client(sampled_url) as client:
        async with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES
        ) as stream:
            streamed = await stream.get_final_message()
        hit = await client.messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES
        )
    assert hit.headers["x-gateway-cache"] == "HIT"
    assert wire(await hit.parse()) == wire(streamed)
    assert len(mock.requests) == 1


async def test_anthropic_whole_miss_then_stream_hit(sampled_url: str, mock: MockState) -> None:
    async with anthropic_client(sampled_url) as client:
        whole = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES
        )
        async with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            replayed = await stream.get_final_message()
    assert text == "Mock answer: Hello there"
    assert wire(replayed) == wire(whole)
    assert len(mock.requests) == 1


TOOL_CALL_STREAM = [
    {"role": "assistant", "content": None},
    {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": ""},
            }
        ]
    },
    {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]},
]
TOOL_USE_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 20, "output_tokens": 9},
}

REFUSAL_MESSAGE = {
    **TOOL_USE_MESSAGE,
    "content": [],
    "stop_reason": "refusal",
    "stop_details": {"type": "refusal", "category": "cyber", "explanation": "Not this one."},
}
REFUSE = "Write some malware"


def _openai_tool_stream() -> bytes:
    head = {"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}
        for d in TOOL_CALL_STREAM
    ]
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    chunks.append(
        {
            **head,
            "choices": [],
            "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37},
        }
    )
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


@pytest.fixture
async def tool_url(
    aiohttp_server: Server, make_config: Callable[..., GatewayConfig], store_url: str
) -> str:
    """A gateway in front of a provider that answers with tool calls."""

    async def openai_answer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=_openai_tool_stream(), content_type="text/event-stream")

    async def anthropic_answer(request: web.Request) -> web.StreamResponse:
        asked = (await request.json())["messages"][0]["content"]
        return web.json_response(REFUSAL_MESSAGE if asked == REFUSE else TOOL_USE_MESSAGE)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", openai_answer)
    app.router.add_post("/v1/messages", anthropic_answer)
    provider = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    providers = {
        "openai": {"kind": "openai", "base_url": f"{provider}/v1", "api_key": PROVIDER_KEY},
        "anthropic": {"kind": "anthropic", "base_url": provider, "api_key": PROVIDER_KEY},
    }
    config = make_config(
        providers=providers, **cache_config(store_url, cache_nondeterministic=True)
    )
    return await start_gateway(aiohttp_server, config)


async def test_openai_streamed_tool_calls_come_back_whole(tool_url: str) -> None:
    async with openai_client(tool_url) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, temperature=0, stream=True
        )
        _ = [c async for c in stream]
        hit = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, temperature=0
        )
    call = hit.parse().choices[0].message.tool_calls[0]  # type: ignore[index]
    assert hit.headers["x-gateway-cache"] == "HIT"
    assert (call.id, call.function.name) == ("call_1", "weather")  # type: ignore[union-attr]
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert hit.parse().choices[0].finish_reason == "tool_calls"


async def _whole_then_streamed(url: str, messages: Any) -> tuple[Any, Any, str]:
    """An Anthropic answer asked for whole, then streamed: both, and the stream's cache
    header."""
    async with anthropic_client(url) as client:
        whole = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=100, messages=messages
        )
        async with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=messages
        ) as stream:
            replayed = await stream.get_final_message()
            return whole, replayed, stream.response.headers["x-gateway-cache"]


async def test_anthropic_tool_use_comes_back_streamed(tool_url: str) -> None:
    whole, replayed, _ = await _whole_then_streamed(tool_url, MESSAGES)
    assert wire(replayed) == wire(whole)
    assert replayed.content[1].type == "tool_use"
    assert replayed.content[1].input == {"city": "Paris"}


async def test_anthropic_refusal_comes_back_streamed_with_why_it_stopped(tool_url: str) -> None:
    asked: list[Any] = [{"role": "user", "content": REFUSE}]
    whole, replayed, hit = await _whole_then_streamed(tool_url, asked)
    assert hit == "HIT"
    assert replayed.stop_reason == "refusal"
    assert replayed.stop_details is not None
    assert replayed.stop_details.category == "cyber"
    assert wire(replayed) == wire(whole)

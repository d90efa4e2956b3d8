"""Only complete successes are stored: every other outcome, repeated, reaches the provider."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.cache.state import cache_stats
from gateway.mock import MockState, ScriptStep
from tests.conftest import PROVIDER_KEY
from tests.integration.test_cache import (
    ANTHROPIC_A,
    A,
    Client,
    MakeGateway,
    cache_config,
    chat,
    message,
    post,
)


@pytest.fixture
async def gateway(make_gateway: MakeGateway, store_url: str) -> Client:
    return await make_gateway(**cache_config(store_url))


async def _twice(gateway: Client, body: dict[str, Any], headers: dict[str, str], path: str) -> None:
    for _ in range(2):
        resp, _ = await post(gateway, body, headers, path)
        assert resp.headers["x-gateway-cache"] == "MISS"


CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


@pytest.mark.parametrize(
    ("body", "faults", "path"),
    [
        pytest.param(chat(), {"x-mock-status": "500"}, CHAT, id="server-error"),
        pytest.param(chat(), {"x-mock-status": "429"}, CHAT, id="rate-limited"),
        pytest.param(chat(), {"x-mock-status": "400"}, CHAT, id="bad-request"),
        pytest.param(chat(), {"x-mock-malformed": "1"}, CHAT, id="truncated-json"),
        pytest.param(chat(stream=True), {"x-mock-malformed": "1"}, CHAT, id="malformed-stream"),
        pytest.param(chat(stream=True), {"x-mock-cut-after": "2"}, CHAT, id="interrupted-stream"),
        pytest.param(message(), {"x-mock-status": "529"}, MESSAGES, id="anthropic-overloaded"),
        pytest.param(
            message(stream=True), {"x-mock-cut-after": "3"}, MESSAGES, id="anthropic-interrupted"
        ),
    ],
)
async def test_failed_answer_is_not_stored_and_the_repeat_reaches_the_provider(
    gateway: Client, mock: MockState, body: dict[str, Any], faults: dict[str, str], path: str
) -> None:
    auth = ANTHROPIC_A if path == MESSAGES else A
    await _twice(gateway, body, {**auth, **faults}, path)
    assert len(mock.requests) == 2
    stats = cache_stats(gateway.server.app)
    # An answer that came whole but could not be stored counts as not stored; an error
    # answer is never one to store, and counts as none.
    assert (stats.stores, stats.not_stored) == (0, 0 if "x-mock-status" in faults else 2)


async def test_answer_cut_by_max_tokens_is_complete_and_cached(
    gateway: Client, mock: MockState
) -> None:
    await post(gateway, chat("one two three four", max_tokens=2))
    resp, body = await post(gateway, chat("one two three four", max_tokens=2))
    assert resp.headers["x-gateway-cache"] == "HIT"
    assert orjson.loads(body)["choices"][0]["finish_reason"] == "length"
    assert len(mock.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_answer_larger_than_max_entry_bytes_is_not_stored(
    make_gateway: MakeGateway, store_url: str, mock: MockState, stream: bool
) -> None:
    gateway = await make_gateway(**cache_config(store_url, max_entry_bytes=200))
    await _twice(gateway, chat("x " * 100, stream=stream), A, CHAT)
    assert len(mock.requests) == 2


async def test_answer_from_a_fallback_target_is_not_stored_for_the_primary(
    make_gateway: MakeGateway, store_url: str, mock: MockState
) -> None:
    config = cache_config(store_url)
    config["routes"][0]["fallbacks"] = [{"provider": "openai", "model": "gpt-4.1-mini"}]
    gateway = await make_gateway(**config)
    mock.push([ScriptStep(status=500)], model="gpt-4o-mini")
    fallback, _ = await post(gateway, chat())
    primary, _ = await post(gateway, chat())
    hit, _ = await post(gateway, chat())
    assert (fallback.status, primary.status) == (200, 200)
    assert primary.headers["x-gateway-cache"] == "MISS"
    assert hit.headers["x-gateway-cache"] == "HIT"
    assert [r.json()["model"] for r in mock.requests] == [
        "gpt-4o-mini",
        "gpt-4.1-mini",
        "gpt-4o-mini",
    ]


@dataclass
class OddProvider:
    """A provider that gives one fixed answer, whatever the request."""

    url: str
    content_type: str = "application/json"
    body: bytes = b"{}"
    requests: list[bytes] = field(default_factory=list)


@pytest.fixture
async def odd(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> OddProvider:
    odd = OddProvider(url="")

    async def answer(request: web.Request) -> web.StreamResponse:
        odd.requests.append(await request.read())
        return web.Response(body=odd.body, headers={"Content-Type": odd.content_type})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(app)
    odd.url = str(server.make_url("")).rstrip("/")
    return odd


def _events(*events: dict[str, Any]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


MESSAGE_START = {
    "type": "message_start",
    "message": {"id": "m", "type": "message", "role": "assistant", "model": "c", "content": []},
}
TEXT_BLOCK = [
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {"type": "content_block_stop", "index": 0},
]
MESSAGE_END = [
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
    {"type": "message_stop"},
]
CHOICE = {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        pytest.param(
            CHAT,
            "application/json",
            orjson.dumps({"error": {"message": "busy"}}),
            id="200-error-object",
        ),
        pytest.param(
            CHAT,
            "application/json",
            orjson.dumps({"choices": [{**CHOICE, "finish_reason": None}]}),
            id="no-finish-reason",
        ),
        pytest.param(CHAT, "text/plain", b"upstream says hi", id="not-json"),
        pytest.param(
            CHAT,
            "text/event-stream",
            b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"x"},'
            b'"finish_reason":"stop"}]}\n\n',
            id="stream-without-done",
        ),
        pytest.param(
            MESSAGES,
            "text/event-stream",
            _events(MESSAGE_START, *TEXT_BLOCK, {"type": "brand_new"}, *MESSAGE_END),
            id="unknown-stream-event",
        ),
        pytest.param(
            MESSAGES,
            "text/event-stream",
            _events(MESSAGE_START, *TEXT_BLOCK, {"type": "error", "error": {}}, *MESSAGE_END),
            id="error-event",
        ),
        pytest.param(
            MESSAGES,
            "application/json",
            orjson.dumps({"type": "message", "content": [], "stop_reason": "pause_turn"}),
            id="paused-turn",
        ),
    ],
)
async def test_incomplete_200_answer_is_not_stored(
    make_gateway: MakeGateway,
    store_url: str,
    odd: OddProvider,
    path: str,
    content_type: str,
    body: bytes,
) -> None:
    providers = {
        "openai": {"kind": "openai", "base_url": f"{odd.url}/v1", "api_key": PROVIDER_KEY},
        "anthropic": {"kind": "anthropic", "base_url": odd.url, "api_key": PROVIDER_KEY},
    }
    gateway = await make_gateway(providers=providers, **cache_config(store_url))
    odd.content_type, odd.body = content_type, body
    stream = content_type == "text/event-stream"
    request = message(stream=stream) if path == MESSAGES else chat(stream=stream)
    for _ in range(2):
        resp, received = await post(gateway, request, ANTHROPIC_A if path == MESSAGES else A, path)
        assert resp.status == 200
        assert received == body  # relayed as the provider sent it
    assert len(odd.requests) == 2

"""The benchmark's bare forwarder passes answers and streams through, with the provider key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.bench.forwarder import create_forwarder
from gateway.mock import MockState
from tests.conftest import PROVIDER_KEY

Client = TestClient[Any, Any]
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_forwards_a_buffered_answer_with_the_provider_key(
    aiohttp_client: Callable[..., Awaitable[Client]], mock_url: str, mock: MockState
) -> None:
    client = await aiohttp_client(create_forwarder(mock_url, PROVIDER_KEY))
    resp = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"x-mock-reply": "pong", "Authorization": "x"}
    )
    assert resp.status == 200
    assert (await resp.json())["choices"][0]["message"]["content"] == "pong"
    assert mock.requests[-1].headers["authorization"] == f"Bearer {PROVIDER_KEY}"


async def test_relays_a_stream_chunk_by_chunk(
    aiohttp_client: Callable[..., Awaitable[Client]], mock_url: str
) -> None:
    client = await aiohttp_client(create_forwarder(mock_url, PROVIDER_KEY))
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 200
    assert resp.content_type == "text/event-stream"
    assert (await resp.read()).endswith(b"data: [DONE]\n\n")


async def test_passes_provider_errors_through(
    aiohttp_client: Callable[..., Awaitable[Client]], mock_url: str
) -> None:
    client = await aiohttp_client(create_forwarder(mock_url, "wrong-key"))
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 401

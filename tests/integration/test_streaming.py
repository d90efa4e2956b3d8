"""Streams are relayed as they arrive, end cleanly or with an error event, and a client
that leaves cancels the upstream request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.mock import MockState, ScriptStep
from tests.conftest import KEY_A

Client = TestClient[Any, Any]
AUTH = {"Authorization": f"Bearer {KEY_A}"}
CHAT = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "x"}]}


async def test_first_chunk_arrives_before_provider_sends_the_last(
    gateway: Client, mock: MockState
) -> None:
    delay = 0.3
    mock.push([ScriptStep(reply="one two three four", chunk_delay_s=delay)])
    started = time.monotonic()
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    first = await resp.content.readany()
    first_at = time.monotonic() - started
    rest = await resp.content.read()
    done_at = time.monotonic() - started
    assert first.startswith(b"data: ")
    # The provider needs at least 4 pauses to send everything; the first chunk came before
    # its first pause was over, so nothing was buffered on the way.
    assert first_at < delay
    assert done_at >= 4 * delay
    assert rest.rstrip().endswith(b"data: [DONE]")


async def test_stream_cut_by_provider_ends_with_error_event(
    gateway: Client, mock: MockState
) -> None:
    mock.push([ScriptStep(reply="a b c d e f", cut_after=3)])
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    text = (await resp.read()).decode()
    events = [e for e in text.split("\n\n") if e.strip()]
    assert len(events) == 4
    assert events[-1].startswith('data: {"error":')
    assert "broke off" in events[-1]
    assert len(mock.requests) == 1


async def test_anthropic_stream_cut_ends_with_error_event(gateway: Client, mock: MockState) -> None:
    mock.push([ScriptStep(reply="a b c d e f", cut_after=2)])
    payload = {
        "model": "claude-haiku-4-5",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    resp = await gateway.post("/v1/messages", json=payload, headers={"x-api-key": KEY_A})
    text = (await resp.read()).decode()
    assert text.rstrip().splitlines()[-2] == "event: error"


async def test_client_disconnect_cancels_the_upstream_request(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    make_gateway: Callable[..., Awaitable[Client]],
) -> None:
    upstream_gone = asyncio.Event()

    async def slow_stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for i in range(100):
                await resp.write(f'data: {{"n": {i}}}\n\n'.encode())
                await asyncio.sleep(0.05)
        except (ConnectionResetError, asyncio.CancelledError):
            upstream_gone.set()
            raise
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", slow_stream)
    upstream = await aiohttp_server(app)
    url = str(upstream.make_url("/v1")).rstrip("/")
    providers = {
        "openai": {"kind": "openai", "base_url": url},
        "anthropic": {"kind": "anthropic", "base_url": url},
    }
    gateway = await make_gateway(providers=providers)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert (await resp.content.readany()).startswith(b"data: ")
    resp.close()
    await asyncio.wait_for(upstream_gone.wait(), timeout=5)

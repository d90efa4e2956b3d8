"""Streams reach the client as whole events, whatever line endings the provider uses and however
its bytes are cut: a provider that breaks off mid-event leaves no half event before the
gateway's error event, and the usage the gateway asked for is taken out in every form."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.drain import DRAIN
from tests.conftest import KEY_A, sha

Client = TestClient[Any, Any]
AUTH = {"Authorization": f"Bearer {KEY_A}"}
KEYS = [{"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"]}]
MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
WITH_USAGE = {**CHAT, "stream_options": {"include_usage": True}}
CLAUDE = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": MESSAGES, "stream": True}
IDLE_S = 0.3
PAUSE_S = 0.05  # between the provider's writes: each reaches the gateway in a read of its own
NEWLINES = [b"\n", b"\r\n", b"\r"]
BROKE_OFF = (
    b'data: {"error":{"message":"The provider stream broke off before it was complete.",'
    b'"type":"api_error","param":null,"code":"upstream_failed"}}\n\n'
)
SILENT = (
    b'data: {"error":{"message":"The provider stream was silent for 0.3s.",'
    b'"type":"timeout_error","param":null,"code":"deadline_exceeded"}}\n\n'
)


def chunk(text: str, usage: bytes = b',"usage":null') -> bytes:
    """An OpenAI chat chunk event (no line endings), with usage as the provider sends it once
    usage is asked for."""
    return (
        b'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,'
        b'"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"'
        + text.encode()
        + b'"},"finish_reason":null}]'
        + usage
        + b"}"
    )


USAGE = (
    b'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,'
    b'"model":"gpt-4o-mini","choices":[],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}'
)
DONE = b"data: [DONE]"


def claude_event(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


CLAUDE_START = claude_event(
    "message_start",
    b'{"type":"message_start","message":{"id":"msg_x","type":"message","role":"assistant",'
    b'"model":"claude-haiku-4-5","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":5,"output_tokens":1}}}',
) + claude_event(
    "content_block_start",
    b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
)


def claude_delta(text: str) -> bytes:
    return claude_event(
        "content_block_delta",
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'
        + text.encode()
        + b'"}}',
    )


@dataclass
class Upstream:
    """A provider that streams `writes` (one write each, a pause between them), then ends as
    `end` says: `eof` (a normal end), `abort` (a broken connection) or `stall` (silence)."""

    url: str
    writes: list[bytes] = field(default_factory=list)
    end: str = "eof"
    bodies: list[bytes] = field(default_factory=list)

    written: asyncio.Event = field(default_factory=asyncio.Event)  # every write is out

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.read())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index, data in enumerate(self.writes):
            if index:
                await asyncio.sleep(PAUSE_S)
            await response.write(data)
        self.written.set()
        await asyncio.sleep(PAUSE_S)
        if self.end == "stall":
            await asyncio.sleep(10 * IDLE_S)
        elif self.end == "abort":
            response.force_close()
            assert request.transport is not None
            request.transport.abort()
        return response


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Upstream:
    app = web.Application()
    provider = Upstream(url="")
    app.router.add_post("/v1/chat/completions", provider.handle)
    app.router.add_post("/v1/messages", provider.handle)
    server = await aiohttp_server(app)  # on 127.0.0.1, a free port
    provider.url = str(server.make_url("")).rstrip("/")
    return provider


@pytest.fixture
def config(upstream: Upstream, make_config: Callable[..., GatewayConfig]) -> GatewayConfig:
    return gateway_config(upstream, make_config, IDLE_S)


def gateway_config(
    upstream: Upstream, make_config: Callable[..., GatewayConfig], idle_s: float
) -> GatewayConfig:
    route = {"idle_timeout_s": idle_s, "retry": {"attempts": 1}}
    return make_config(
        providers={
            "openai": {"kind": "openai", "base_url": f"{upstream.url}/v1"},
            "anthropic": {"kind": "anthropic", "base_url": upstream.url},
        },
        routes=[
            {"name": "chat", "match": {"path": "/v1/chat/completions"}, "provider": "openai"}
            | route,
            {"name": "claude", "match": {"path": "/v1/messages"}, "provider": "anthropic"} | route,
        ],
        keys=KEYS,
    )


@pytest.fixture
async def gateway(
    aiohttp_client: Callable[..., Awaitable[Client]], config: GatewayConfig
) -> Client:
    return await aiohttp_client(create_app(config))


@pytest.fixture
async def gateway_url(
    aiohttp_server: Callable[..., Awaitable[TestServer]], config: GatewayConfig
) -> str:
    server = await aiohttp_server(create_app(config))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def logged() -> AsyncIterator[list[dict[str, Any]]]:
    """The request log lines written while the test runs."""
    with structlog.testing.capture_logs() as logs:
        yield logs


async def request_line(logs: list[dict[str, Any]]) -> dict[str, Any]:
    """The one log line of the test's one request, once it is written."""
    for _ in range(100):
        lines = [line for line in logs if line["event"] == "request"]
        if lines:
            await asyncio.sleep(0.05)  # a second line would have come by now
            (line,) = [line for line in logs if line["event"] == "request"]
            return line
        await asyncio.sleep(0.02)
    raise AssertionError("the request was never logged")


def events(*each: bytes, newline: bytes) -> bytes:
    """Events with `newline` as every line ending, each followed by a blank line."""
    return b"".join(event.replace(b"\n", newline) + newline + newline for event in each)


async def received(resp: Any) -> list[bytes]:
    """The body as the client read it, piece by piece."""
    return [piece async for piece in resp.content.iter_any()]


@pytest.mark.parametrize("newline", NEWLINES)
async def test_a_stream_in_any_line_ending_form_loses_only_the_usage_the_gateway_asked_for(
    newline: bytes, upstream: Upstream, gateway: Client, logged: list[dict[str, Any]]
) -> None:
    upstream.writes = [
        events(chunk("Hel"), newline=newline),
        events(chunk("lo"), USAGE, DONE, newline=newline),
    ]
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    assert await resp.read() == events(chunk("Hel", b""), chunk("lo", b""), DONE, newline=newline)
    assert b'"include_usage":true' in upstream.bodies[0]
    line = await request_line(logged)
    assert (line["outcome"], line["cost_source"], line["output_tokens"]) == ("ok", "usage", 3)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("body", [CHAT, WITH_USAGE], ids=["usage-taken-out", "usage-asked"])
async def test_an_event_split_across_two_writes_reaches_the_client_whole(
    newline: bytes, body: dict[str, Any], upstream: Upstream, gateway: Client
) -> None:
    first, second = chunk("Hel"), chunk("lo")
    upstream.writes = [
        events(first, newline=newline) + second[:40],
        second[40:] + newline + newline + events(USAGE, DONE, newline=newline),
    ]
    resp = await gateway.post("/v1/chat/completions", json=body, headers=AUTH)
    pieces = await received(resp)
    if body is CHAT:
        assert b"".join(pieces) == events(
            chunk("Hel", b""), chunk("lo", b""), DONE, newline=newline
        )
    else:
        assert b"".join(pieces) == events(first, second, USAGE, DONE, newline=newline)
    assert all(piece.endswith(newline + newline) for piece in pieces)  # never half an event


@pytest.mark.parametrize("newline", NEWLINES)
async def test_a_last_event_without_its_blank_line_still_reaches_the_client(
    newline: bytes, upstream: Upstream, gateway: Client, logged: list[dict[str, Any]]
) -> None:
    upstream.writes = [events(chunk("Hi"), USAGE, newline=newline) + DONE + newline]
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert await resp.read() == events(chunk("Hi", b""), newline=newline) + DONE + newline
    line = await request_line(logged)
    assert (line["outcome"], line["cost_source"]) == ("ok", "usage")


async def test_the_usage_null_field_is_taken_out_however_it_is_spaced(
    upstream: Upstream, gateway: Client
) -> None:
    upstream.writes = [
        events(chunk("a", b', "usage": null'), chunk("b", b',"usage" : null'), newline=b"\n"),
        events(USAGE.replace(b'"usage":', b'"usage": '), DONE, newline=b"\n"),
    ]
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    body = await resp.read()
    assert body == events(chunk("a", b""), chunk("b", b""), DONE, newline=b"\n")
    assert b"usage" not in body


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("body", [CHAT, WITH_USAGE], ids=["usage-taken-out", "usage-asked"])
@pytest.mark.parametrize(("end", "error"), [("abort", BROKE_OFF), ("stall", SILENT)])
async def test_a_stream_broken_mid_event_ends_with_the_error_event_after_whole_events(
    newline: bytes,
    body: dict[str, Any],
    end: str,
    error: bytes,
    upstream: Upstream,
    gateway: Client,
    logged: list[dict[str, Any]],
) -> None:
    """The half event is never sent; the estimate counts the events the client got, in any
    line-ending form."""
    first, second = chunk("Hel"), chunk("lo")
    upstream.writes = [events(first, second, newline=newline), chunk("wor")[:40]]
    upstream.end = end
    resp = await gateway.post("/v1/chat/completions", json=body, headers=AUTH)
    assert resp.status == 200
    if body is CHAT:
        first, second = chunk("Hel", b""), chunk("lo", b"")
    assert await resp.read() == events(first, second, newline=newline) + error
    line = await request_line(logged)
    assert (line["outcome"], line["status"]) == ("stream_interrupted", 200)
    assert (line["cost_source"], line["output_tokens"]) == ("estimate", 2)


@pytest.mark.parametrize("newline", NEWLINES)
async def test_a_stream_cut_between_events_is_billed_for_the_events_it_delivered(
    newline: bytes, upstream: Upstream, gateway: Client, logged: list[dict[str, Any]]
) -> None:
    """One output token per event the client got, however the provider ends its lines."""
    upstream.writes = [
        events(chunk("a"), chunk("b"), newline=newline),
        events(chunk("c"), newline=newline),
    ]
    upstream.end = "abort"
    resp = await gateway.post("/v1/chat/completions", json=WITH_USAGE, headers=AUTH)
    sent = events(chunk("a"), chunk("b"), chunk("c"), newline=newline)
    assert await resp.read() == sent + BROKE_OFF
    line = await request_line(logged)
    assert (line["outcome"], line["cost_source"], line["output_tokens"]) == (
        "stream_interrupted",
        "estimate",
        3,
    )


@pytest.mark.parametrize("body", [CHAT, WITH_USAGE], ids=["usage-taken-out", "usage-asked"])
async def test_a_stream_the_drain_cuts_mid_event_ends_with_its_event_after_whole_events(
    body: dict[str, Any],
    upstream: Upstream,
    make_config: Callable[..., GatewayConfig],
    aiohttp_client: Callable[..., Awaitable[Client]],
    logged: list[dict[str, Any]],
) -> None:
    gateway = await aiohttp_client(create_app(gateway_config(upstream, make_config, 30)))
    first = chunk("Hel", b"" if body is CHAT else b',"usage":null')
    upstream.writes = [events(chunk("Hel"), newline=b"\r\n"), chunk("lo")[:40]]
    upstream.end = "stall"
    resp = await gateway.post("/v1/chat/completions", json=body, headers=AUTH)
    await upstream.written.wait()
    await asyncio.sleep(PAUSE_S)  # the half event has reached the gateway
    assert gateway.app[DRAIN].cut_all() == 1
    assert await resp.read() == events(first, newline=b"\r\n") + (
        b'data: {"error":{"message":"The gateway shut down before the stream was complete.",'
        b'"type":"overloaded_error","param":null,"code":"shutting_down"}}\n\n'
    )
    line = await request_line(logged)
    assert (line["outcome"], line["cost_source"], line["output_tokens"]) == (
        "stream_interrupted",
        "estimate",
        1,
    )


@pytest.mark.parametrize("asked", [False, True], ids=["usage-taken-out", "usage-asked"])
async def test_the_openai_sdk_gets_its_api_error_when_the_provider_breaks_off_mid_event(
    asked: bool, upstream: Upstream, gateway_url: str
) -> None:
    upstream.writes = [events(chunk("Hel"), newline=b"\n"), chunk("lo")[:40]]
    upstream.end = "abort"
    texts: list[str | None] = []
    async with openai.AsyncOpenAI(
        base_url=f"{gateway_url}/v1", api_key=KEY_A, max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True} if asked else openai.omit,
        )
        with pytest.raises(openai.APIError) as raised:
            await _read_openai(stream, texts)
    assert texts == ["Hel"]
    assert raised.value.body == {
        "message": "The provider stream broke off before it was complete.",
        "type": "api_error",
        "param": None,
        "code": "upstream_failed",
    }


async def _read_openai(stream: Any, texts: list[str | None]) -> None:
    async for part in stream:
        texts += [choice.delta.content for choice in part.choices]


async def test_an_anthropic_stream_broken_mid_event_ends_with_a_whole_error_event(
    upstream: Upstream, gateway: Client, logged: list[dict[str, Any]]
) -> None:
    upstream.writes = [CLAUDE_START + claude_delta("Hel"), claude_delta("lo")[:50]]
    upstream.end = "abort"
    resp = await gateway.post("/v1/messages", json=CLAUDE, headers={"x-api-key": KEY_A})
    assert await resp.read() == CLAUDE_START + claude_delta("Hel") + claude_event(
        "error",
        b'{"type":"error","error":{"type":"api_error",'
        b'"message":"The provider stream broke off before it was complete."}}',
    )
    line = await request_line(logged)
    assert (line["outcome"], line["cost_source"]) == ("stream_interrupted", "estimate")


async def test_the_anthropic_sdk_gets_its_status_error_when_the_provider_breaks_off_mid_event(
    upstream: Upstream, gateway_url: str
) -> None:
    upstream.writes = [CLAUDE_START + claude_delta("Hel"), claude_delta("lo")[:50]]
    upstream.end = "abort"
    texts: list[str] = []
    async with anthropic.AsyncAnthropic(
        base_url=gateway_url, api_key=KEY_A, max_retries=0
    ) as client:
        stream = await client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=50,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
        with pytest.raises(anthropic.APIStatusError) as raised:
            await _read_anthropic(stream, texts)
    assert texts == ["Hel"]
    assert raised.value.body == {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": "The provider stream broke off before it was complete.",
        },
    }


async def _read_anthropic(stream: Any, texts: list[str]) -> None:
    async for event in stream:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            texts.append(event.delta.text)

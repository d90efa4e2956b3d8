"""A body nested more deeply than the gateway can write JSON again is refused with a 400 in the
client's dialect wherever the gateway has to write it (a cache key, the stream usage option, a
model rewrite, a fallback's model), never a 500; a body it passes through untouched still goes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.accounting import local_periods
from gateway.mock import MockState
from gateway.stages.body import MAX_NESTING
from gateway.store.accounting import ACCOUNTING
from tests.conftest import KEY_A, sha

Client = TestClient[Any, Any]
OPENAI = {"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"}
ANTHROPIC = {"x-api-key": KEY_A, "Content-Type": "application/json"}
MESSAGE = b'"messages":[{"role":"user","content":"hi"}]'
TOO_DEEP = (
    "The request body is nested too deeply: the gateway rewrites JSON nested at most "
    f"{MAX_NESTING} levels deep."
)


def body(model: str, levels: int, extra: bytes = b"") -> bytes:
    """A request whose field `x` makes the body `levels` deep (the body's object is one)."""
    nested = b"[" * (levels - 1) + b"]" * (levels - 1)
    return b'{"model":"%s",%s,"max_tokens":20%s,"x":%s}' % (model.encode(), MESSAGE, extra, nested)


DETERMINISTIC = b',"temperature":0'
STREAM = b',"stream":true'
SITES = {
    # name: (path, model, extra fields, headers)
    "openai-cache-key": ("/v1/chat/completions", "gpt-4o-mini", DETERMINISTIC, OPENAI),
    "anthropic-cache-key": ("/v1/messages", "claude-haiku-4-5", DETERMINISTIC, ANTHROPIC),
    "openai-stream-usage": ("/v1/chat/completions", "plain-model", STREAM, OPENAI),
    "openai-model-rewrite": ("/v1/chat/completions", "cheap-model", b"", OPENAI),
    "anthropic-model-rewrite": ("/v1/messages", "claude-cheap", b"", ANTHROPIC),
    "openai-fallback-model": ("/v1/chat/completions", "spare-model", b"", OPENAI),
}


@pytest.fixture
async def gateway(
    make_gateway: Callable[..., Awaitable[Client]], store_url: str, mock: MockState
) -> Client:
    cached = {"cache": {"ttl_s": 60}}
    return await make_gateway(
        storage={"url": store_url},
        routes=[
            {"name": "plain", "match": {"model": "plain-*"}, "provider": "openai"},
            {
                "name": "cheap",
                "match": {"model": "cheap-*"},
                "provider": "openai",
                "model": "gpt-4o-mini",
            },
            {
                "name": "spare",
                "match": {"model": "spare-*"},
                "provider": "openai",
                "fallbacks": [{"provider": "openai", "model": "gpt-4o-mini"}],
            },
            {"name": "chat", "match": {"model": "gpt-4o*"}, "provider": "openai"} | cached,
            {
                "name": "claude-cheap",
                "match": {"model": "claude-cheap"},
                "provider": "anthropic",
                "model": "claude-haiku-4-5",
            },
            {"name": "claude", "match": {"model": "claude-*"}, "provider": "anthropic"} | cached,
        ],
        keys=[
            {
                "name": "team-a",
                "key_sha256": sha(KEY_A),
                "routes": ["*"],
                "budget": {"usd_per_month": 100},
            }
        ],
    )


async def _spent_and_held(gateway: Client) -> list[int]:
    month = local_periods()[1]
    keys = [f"spent:k:team-a:m{month}", f"held:k:team-a:m{month}"]
    return await gateway.server.app[ACCOUNTING].read(keys)


def _error(site: str, answer: Any) -> dict[str, Any]:
    """The error object, checked to be in the dialect of the site's path."""
    if SITES[site][3] is ANTHROPIC:
        assert set(answer) == {"type", "error"}
        assert answer["type"] == "error"
        assert set(answer["error"]) == {"type", "message"}
    else:
        assert set(answer) == {"error"}
        assert set(answer["error"]) == {"message", "type", "param", "code"}
        assert answer["error"]["code"] == "invalid_request"
    error: dict[str, Any] = answer["error"]
    return error


@pytest.mark.parametrize("site", list(SITES))
async def test_a_body_too_deep_to_write_again_is_a_400_in_the_dialect_and_one_log_line(
    site: str, gateway: Client, mock: MockState
) -> None:
    path, model, extra, headers = SITES[site]
    with structlog.testing.capture_logs() as logs:
        resp = await gateway.post(path, data=body(model, 300, extra), headers=headers)
        answer = await resp.json()
    assert resp.status == 400
    assert resp.headers["x-should-retry"] == "false"
    error = _error(site, answer)
    assert (error["type"], error["message"]) == ("invalid_request_error", TOO_DEEP)
    lines = [line for line in logs if line["event"] == "request"]
    assert [(line["status"], line["outcome"]) for line in lines] == [(400, "rejected")]
    assert not [line for line in logs if line["log_level"] in ("error", "critical")]
    assert mock.requests == []
    assert await _spent_and_held(gateway) == [0, 0]


@pytest.mark.parametrize("site", list(SITES))
async def test_a_body_as_deep_as_the_message_says_is_served_at_every_site(
    site: str, gateway: Client
) -> None:
    path, model, extra, headers = SITES[site]
    resp = await gateway.post(path, data=body(model, MAX_NESTING, extra), headers=headers)
    assert resp.status == 200
    await resp.read()


async def test_a_deep_body_passed_through_untouched_is_not_refused(
    gateway: Client, mock: MockState
) -> None:
    """The gateway writes nothing of it: it reaches the provider byte for byte."""
    sent = body("plain-model", 300)
    resp = await gateway.post("/v1/chat/completions", data=sent, headers=OPENAI)
    assert resp.status == 200
    assert mock.requests[0].body == sent


DEEP_INPUT = b"[" * 300 + b"]" * 300  # readable JSON, too deep to write again
TOOL_ANSWER = (
    b'{"id":"msg_deep","type":"message","role":"assistant","model":"claude-haiku-4-5",'
    b'"content":[{"type":"tool_use","id":"tu_1","name":"f","input":{"x":%s}}],'
    b'"stop_reason":"tool_use","stop_sequence":null,'
    b'"usage":{"input_tokens":5,"output_tokens":7}}' % DEEP_INPUT
)


def _event(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


TOOL_STREAM = b"".join(
    [
        _event(
            "message_start",
            b'{"type":"message_start","message":{"id":"msg_deep","type":"message",'
            b'"role":"assistant","model":"claude-haiku-4-5","content":[],"stop_reason":null,'
            b'"stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":1}}}',
        ),
        _event(
            "content_block_start",
            b'{"type":"content_block_start","index":0,"content_block":'
            b'{"type":"tool_use","id":"tu_1","name":"f","input":{}}}',
        ),
        _event(
            "content_block_delta",
            b'{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta",'
            b'"partial_json":"{\\"x\\":%s}"}}' % DEEP_INPUT,
        ),
        _event("content_block_stop", b'{"type":"content_block_stop","index":0}'),
        _event(
            "message_delta",
            b'{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},'
            b'"usage":{"output_tokens":7}}',
        ),
        _event("message_stop", b'{"type":"message_stop"}'),
    ]
)


async def _deep_tool_provider(request: web.Request) -> web.StreamResponse:
    """An Anthropic provider whose tool call's input is nested 300 levels deep."""
    if not orjson.loads(await request.read()).get("stream"):
        return web.Response(body=TOOL_ANSWER, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(TOOL_STREAM)
    return response


@pytest.mark.parametrize("first", ["buffered", "stream"])
async def test_an_answer_too_deep_to_write_again_is_served_but_not_cached(
    make_gateway: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    first: str,
) -> None:
    """It could not be replayed as a stream (a 500 on every hit) nor, streamed, assembled:
    the client gets it once, the request is logged as answered, and nothing is stored."""
    app = web.Application()
    app.router.add_post("/v1/messages", _deep_tool_provider)
    server = await aiohttp_server(app)
    provider = {"kind": "anthropic", "base_url": str(server.make_url("")).rstrip("/")}
    gateway = await make_gateway(
        providers={"anthropic": provider},
        routes=[
            {
                "name": "msg",
                "match": {"path": "/v1/messages"},
                "provider": "anthropic",
                "cache": {"ttl_s": 60},
            }
        ],
        keys=[{"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"]}],
    )
    request = {"model": "claude-haiku-4-5", "max_tokens": 20, "temperature": 0}
    request["messages"] = [{"role": "user", "content": "call f"}]
    seen = []
    with structlog.testing.capture_logs() as logs:
        for stream in (first == "stream", first != "stream"):
            resp = await gateway.post(
                "/v1/messages", json={**request, "stream": stream}, headers=ANTHROPIC
            )
            await resp.read()
            seen.append((resp.status, resp.headers.get("x-gateway-cache")))
    assert seen == [(200, "MISS"), (200, "MISS")]
    lines = [(line["status"], line["outcome"]) for line in logs if line["event"] == "request"]
    assert lines == [(200, "ok"), (200, "ok")]

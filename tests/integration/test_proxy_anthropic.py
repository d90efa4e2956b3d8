"""Anthropic-format requests through the gateway: messages, streaming, count_tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.drain import DRAIN
from gateway.mock import MockState
from tests.conftest import KEY_A, PROVIDER_KEY

Client = TestClient[Any, Any]
HEADERS = {"x-api-key": KEY_A, "anthropic-version": "2023-06-01"}
MESSAGE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Hello there"}],
}


async def test_message_is_answered_with_provider_key_upstream(
    gateway: Client, mock: MockState
) -> None:
    resp = await gateway.post("/v1/messages", json=MESSAGE, headers=HEADERS)
    assert resp.status == 200
    body = await resp.json()
    assert body["content"][0]["text"] == "Mock answer: Hello there"
    assert resp.headers["x-gateway-route"] == "claude"
    sent = mock.requests[0]
    assert sent.headers["x-api-key"] == PROVIDER_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers


async def test_anthropic_version_is_added_when_client_sends_none(
    gateway: Client, mock: MockState
) -> None:
    resp = await gateway.post("/v1/messages", json=MESSAGE, headers={"x-api-key": KEY_A})
    assert resp.status == 200
    assert mock.requests[0].headers["anthropic-version"] == "2023-06-01"


async def test_message_stream_is_relayed_event_by_event(gateway: Client) -> None:
    resp = await gateway.post("/v1/messages", json={**MESSAGE, "stream": True}, headers=HEADERS)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    text = await resp.text()
    events = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start"
    assert "content_block_delta" in events
    assert events[-1] == "message_stop"


async def test_count_tokens_passes_through(gateway: Client) -> None:
    payload = {"model": "claude-haiku-4-5", "messages": MESSAGE["messages"]}
    resp = await gateway.post("/v1/messages/count_tokens", json=payload, headers=HEADERS)
    assert resp.status == 200
    assert (await resp.json())["input_tokens"] > 0


async def test_anthropic_request_never_goes_to_an_openai_route(gateway: Client) -> None:
    # gpt-4o is served by an OpenAI route only: an Anthropic-format body would be misread.
    resp = await gateway.post("/v1/messages", json={**MESSAGE, "model": "gpt-4o"}, headers=HEADERS)
    assert resp.status == 404
    body = await resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"


# An answer after a web search, as Anthropic streams it: the search results are read as input
# during the answer, so message_delta's cumulative input is larger than message_start's.
_SEARCHED_START = {"input_tokens": 2679, "cache_read_input_tokens": 0, "output_tokens": 3}
_SEARCHED_FINAL = {
    "input_tokens": 10682,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "output_tokens": 510,
    "server_tool_use": {"web_search_requests": 1},
}


def _searched_message(usage: dict[str, Any], done: bool) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "Found it."}] if done else [],
        "stop_reason": "end_turn" if done else None,
        "stop_sequence": None,
        "usage": usage,
    }


async def _searched_answer(request: web.Request) -> web.StreamResponse:
    if not (await request.json()).get("stream"):
        return web.json_response(_searched_message(_SEARCHED_FINAL, done=True))
    events = [
        {"type": "message_start", "message": _searched_message(_SEARCHED_START, done=False)},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Ok"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": _SEARCHED_FINAL},
        {"type": "message_stop"},
    ]
    body = b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps(e)) for e in events
    )
    return web.Response(body=body, content_type="text/event-stream")


async def test_a_stream_is_billed_the_input_its_final_usage_reports_as_its_answer_is(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    make_gateway: Callable[..., Awaitable[Client]],
) -> None:
    app = web.Application()
    app.router.add_post("/v1/messages", _searched_answer)
    url = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    providers = {
        "openai": {"kind": "openai", "base_url": f"{url}/v1"},
        "anthropic": {"kind": "anthropic", "base_url": url},
    }
    gateway = await make_gateway(providers=providers)
    with structlog.testing.capture_logs() as logs:
        for stream in (False, True):
            resp = await gateway.post(
                "/v1/messages", json={**MESSAGE, "stream": stream}, headers=HEADERS
            )
            assert resp.status == 200
            await resp.read()
        assert await gateway.app[DRAIN].wait_idle(5)
    lines = [line for line in logs if line["event"] == "request"]
    billed = [
        (ln["stream"], ln["input_tokens"], ln["output_tokens"], ln["cost_usd"]) for ln in lines
    ]
    cost = billed[0][3]
    assert billed == [(False, 10682, 510, cost), (True, 10682, 510, cost)]

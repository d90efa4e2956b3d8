"""Anthropic-format requests through the gateway: messages, streaming, count_tokens."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

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

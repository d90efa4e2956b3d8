"""A stored answer replays as the stream its endpoint would send, and back again losslessly."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.cache.assemble import assemble
from gateway.cache.entries import Entry
from gateway.cache.policy import Kind
from gateway.cache.replay import respond, sse_body
from gateway.context import Usage
from gateway.sse import SSEParser

USAGE = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
CHAT: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-x",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Calling.",
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": "Other.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        },
    ],
    "usage": USAGE,
}
COMPLETION: dict[str, Any] = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1,
    "model": "m",
    "choices": [{"text": "Hello", "index": 0, "logprobs": None, "finish_reason": "length"}],
    "usage": USAGE,
}
MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 42},
}


def entry(kind: Kind, body: dict[str, Any]) -> Entry:
    return Entry(kind, orjson.dumps(body), Usage(9, 5), stored_at_ms=0, expires_at_ms=1)


def events(raw: bytes) -> list[tuple[str, Any]]:
    return [(n, d if d == b"[DONE]" else orjson.loads(d)) for n, d in SSEParser().feed(raw)]


@pytest.mark.parametrize(
    ("kind", "body"), [("chat", CHAT), ("completion", COMPLETION), ("message", MESSAGE)]
)
def test_replayed_stream_assembles_back_to_the_stored_answer(
    kind: Kind, body: dict[str, Any]
) -> None:
    replayed = sse_body(entry(kind, body), include_usage=True)
    assert assemble(kind, [replayed]) == body


def test_openai_replay_has_the_usage_chunk_only_when_asked() -> None:
    with_usage = events(sse_body(entry("chat", CHAT), include_usage=True))
    without = events(sse_body(entry("chat", CHAT), include_usage=False))
    assert with_usage[-2][1] == {**with_usage[-2][1], "choices": [], "usage": USAGE}
    assert all(chunk["usage"] is None for _, chunk in with_usage[:-2])
    assert all("usage" not in chunk for _, chunk in without[:-1])
    assert with_usage[-1][1] == without[-1][1] == b"[DONE]"


def test_openai_chat_replay_uses_chunk_objects_and_role_first() -> None:
    chunks = [c for _, c in events(sse_body(entry("chat", CHAT), include_usage=False))[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["system_fingerprint"] for c in chunks} == {"fp_1"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_anthropic_replay_uses_named_events_in_the_api_order() -> None:
    names = [name for name, _ in events(sse_body(entry("message", MESSAGE), False))]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 3


def test_stream_request_for_an_embedding_gets_json() -> None:
    body = {"object": "list", "data": [{"embedding": [0.1]}], "usage": {"prompt_tokens": 1}}
    response = respond(entry("embedding", body), stream=True, include_usage=False)
    assert response.content_type == "application/json"
    assert response.body == orjson.dumps(body)


def test_json_replay_is_the_stored_body_byte_for_byte_with_fresh_framing() -> None:
    stored = entry("chat", CHAT)
    response = respond(stored, stream=False, include_usage=False)
    assert response.body == stored.body
    assert "Transfer-Encoding" not in response.headers
    assert response.content_type == "application/json"


def test_sse_replay_is_an_event_stream() -> None:
    response = respond(entry("message", MESSAGE), stream=True, include_usage=False)
    assert response.content_type == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"

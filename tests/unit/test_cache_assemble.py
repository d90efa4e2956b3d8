"""Streams are rebuilt into the non-stream answer, or refused when that cannot be faithful."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.cache.assemble import assemble

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x"}
USAGE = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}


def sse(*chunks: Any, done: bool = True) -> list[bytes]:
    """OpenAI framing, split at odd places as a network would."""
    raw = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    raw += b"data: [DONE]\n\n" if done else b""
    return [raw[i : i + 37] for i in range(0, len(raw), 37)]


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**HEAD, "choices": [choice], "obfuscation": "x9"}


def tool_delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, **fields}]}


def test_chat_stream_with_tool_calls_becomes_a_chat_completion_with_usage() -> None:
    stream = sse(
        chunk({"role": "assistant", "content": None}),
        chunk(
            tool_delta(0, id="call_a", type="function", function={"name": "get", "arguments": ""})
        ),
        chunk(tool_delta(0, function={"arguments": '{"city":'})),
        chunk(tool_delta(1, id="call_b", type="function", function={"name": "put"})),
        chunk(tool_delta(0, function={"arguments": ' "Paris"}'})),
        chunk(tool_delta(1, function={"arguments": "{}"})),
        chunk({}, "tool_calls"),
        {**HEAD, "choices": [], "usage": USAGE},
    )
    body = assemble("chat", stream)
    assert body == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "put", "arguments": "{}"},
                        },
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE,
    }


def test_chat_stream_with_two_choices_keeps_each_by_index() -> None:
    stream = sse(
        chunk({"role": "assistant", "content": "A"}, index=0),
        chunk({"role": "assistant", "content": "B"}, index=1),
        chunk({"content": "a"}, index=0),
        chunk({"content": "b"}, "length", index=1),
        chunk({}, "stop", index=0),
    )
    body = assemble("chat", stream)
    assert body is not None
    assert [c["message"]["content"] for c in body["choices"]] == ["Aa", "Bb"]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length"]
    assert "usage" not in body


def test_completion_stream_becomes_a_text_completion() -> None:
    head = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}
    pieces = [
        {"text": "Hel", "index": 0, "logprobs": None, "finish_reason": None},
        {"text": "lo", "index": 0, "logprobs": None, "finish_reason": None},
        {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"},
    ]
    stream = sse(
        *({**head, "choices": [p]} for p in pieces), {**head, "choices": [], "usage": USAGE}
    )
    assert assemble("completion", stream) == {
        **head,
        "choices": [{"text": "Hello", "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": USAGE,
    }


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(sse(chunk({"content": "a"}), chunk({}, "stop"), done=False), id="no-done"),
        pytest.param(sse(chunk({"content": "a"}), {"error": {"message": "x"}}), id="error-chunk"),
        pytest.param(
            sse(chunk({"reasoning_content": "hm"}), chunk({}, "stop")), id="unknown-delta"
        ),
        pytest.param(sse({**HEAD, "choices": [], "extra": 1}), id="unknown-chunk-field"),
        pytest.param(
            sse({**HEAD, "choices": [{"index": 0, "delta": {}, "logprobs": {"content": []}}]}),
            id="logprobs",
        ),
        pytest.param([b'data: {"id": "x", "choi\n\ndata: [DONE]\n\n'], id="truncated-json"),
        pytest.param(sse(chunk(tool_delta(0, function={"arguments": "{}"}))), id="tool-no-id"),
        pytest.param([], id="empty"),
    ],
)
def test_chat_stream_that_cannot_be_rebuilt_faithfully_is_refused(stream: list[bytes]) -> None:
    assert assemble("chat", stream) is None


def named(*events: dict[str, Any]) -> list[bytes]:
    return [
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    ]


MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [],
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 3},
}


def block(index: int, content_block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": content_block}


def delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": fields}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


START = {"type": "message_start", "message": MESSAGE}
END = [
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 42},
    },
    {"type": "message_stop"},
]


def test_anthropic_stream_with_thinking_text_and_tool_use_becomes_a_message() -> None:
    stream = named(
        START,
        block(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, type="thinking_delta", thinking="Let me "),
        delta(0, type="thinking_delta", thinking="think."),
        delta(0, type="signature_delta", signature="sig=="),
        stop(0),
        {"type": "ping"},
        block(1, {"type": "text", "text": ""}),
        delta(1, type="text_delta", text="Checking"),
        stop(1),
        block(2, {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {}}),
        delta(2, type="input_json_delta", partial_json='{"city"'),
        delta(2, type="input_json_delta", partial_json=': "Paris"}'),
        stop(2),
        *END,
    )
    assert assemble("message", stream) == {
        **MESSAGE,
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig=="},
            {"type": "text", "text": "Checking"},
            {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 42, "cache_read_input_tokens": 3},
    }


def test_anthropic_tool_use_without_input_deltas_keeps_an_empty_input() -> None:
    stream = named(
        START, block(0, {"type": "tool_use", "id": "t", "name": "n", "input": {}}), stop(0), *END
    )
    body = assemble("message", stream)
    assert body is not None
    assert body["content"][0]["input"] == {}


TEXT = [block(0, {"type": "text", "text": ""}), delta(0, type="text_delta", text="hi"), stop(0)]


@pytest.mark.parametrize(
    "events",
    [
        pytest.param([START, *TEXT], id="no-message-stop"),
        pytest.param([START, *TEXT, {"type": "error", "error": {"type": "x"}}, *END], id="error"),
        pytest.param([START, *TEXT, {"type": "brand_new_event"}, *END], id="unknown-event"),
        pytest.param(
            [START, block(0, {"type": "web_search_tool_result", "content": []}), stop(0), *END],
            id="unknown-block",
        ),
        pytest.param(
            [START, TEXT[0], delta(0, type="citations_delta", citation={}), stop(0), *END],
            id="citations",
        ),
        pytest.param([START, TEXT[0], TEXT[1], *END], id="block-never-stopped"),
        pytest.param(
            [
                START,
                block(0, {"type": "tool_use", "id": "t", "name": "n", "input": {}}),
                delta(0, type="input_json_delta", partial_json='{"a": '),
                stop(0),
                *END,
            ],
            id="broken-tool-json",
        ),
        pytest.param([*TEXT, *END], id="no-message-start"),
    ],
)
def test_anthropic_stream_that_cannot_be_rebuilt_faithfully_is_refused(
    events: list[dict[str, Any]],
) -> None:
    assert assemble("message", named(*events)) is None


def test_long_streams_are_rebuilt_piece_by_piece_in_both_dialects() -> None:
    pieces = [f"w{i} " for i in range(2000)]
    chat = sse(
        chunk({"role": "assistant", "content": ""}), *(chunk({"content": p}) for p in pieces)
    )
    body = assemble("chat", chat)
    assert body is not None
    assert body["choices"][0]["message"]["content"] == "".join(pieces)
    message = named(
        START,
        block(0, {"type": "text", "text": "So: "}),  # text the block starts with is kept
        *(delta(0, type="text_delta", text=p) for p in pieces),
        stop(0),
        *END,
    )
    body = assemble("message", message)
    assert body is not None
    assert body["content"] == [{"type": "text", "text": "So: " + "".join(pieces)}]


@pytest.mark.parametrize(
    ("deltas", "message"),
    [
        pytest.param(
            [{"content": "a"}, {"content": "b"}],
            {"role": "assistant", "content": "ab", "refusal": None},
            id="text-only-from-the-start",
        ),
        pytest.param(
            [{"role": "assistant", "content": None}, {"content": "a"}, {"content": "b"}],
            {"role": "assistant", "content": "ab", "refusal": None},
            id="text-after-a-null",
        ),
        pytest.param(
            [{"content": "a"}, {"content": "b", "refusal": None}, {"content": "c"}, {}],
            {"role": "assistant", "content": "abc", "refusal": None},
            id="text-beside-other-fields",
        ),
        pytest.param(
            [{"refusal": "no"}, {"content": "x"}, {"refusal": "pe"}, {"role": "tool"}],
            {"role": "tool", "content": "x", "refusal": "nope"},
            id="refusal-and-role-between-pieces",
        ),
    ],
)
def test_text_pieces_keep_their_order_whatever_else_the_deltas_carry(
    deltas: list[dict[str, Any]], message: dict[str, Any]
) -> None:
    body = assemble("chat", sse(*(chunk(d) for d in deltas), chunk({}, "stop")))
    assert body is not None
    assert body["choices"][0]["message"] == message
    assert body["choices"][0]["finish_reason"] == "stop"


def test_embeddings_are_never_assembled_from_a_stream() -> None:
    assert assemble("embedding", sse(chunk({"content": "a"}))) is None

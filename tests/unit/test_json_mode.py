"""Output anomalies: invalid JSON in JSON mode, empty, truncated and refused answers."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.json_mode import anomalies, wants_json

CHAT = "/v1/chat/completions"
JSON_OBJECT = {"model": "m", "messages": [], "response_format": {"type": "json_object"}}


def _chat(content: str | None, finish: str = "stop", **message: Any) -> dict[str, Any]:
    return {
        "choices": [
            {
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": finish,
            }
        ]
    }


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        (CHAT, JSON_OBJECT),
        (CHAT, {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
        ("/v1/responses", {"text": {"format": {"type": "json_schema"}}}),
        ("/v1/messages", {"output_format": {"type": "json_schema", "schema": {}}}),
    ],
)
def test_json_formats_are_recognised(path: str, payload: dict[str, Any]) -> None:
    assert wants_json(path, payload)


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        (CHAT, {"response_format": {"type": "text"}}),
        (CHAT, {"messages": []}),
        ("/v1/embeddings", JSON_OBJECT),
        (CHAT, None),
    ],
)
def test_other_requests_do_not_want_json(path: str, payload: dict[str, Any] | None) -> None:
    assert not wants_json(path, payload)


def test_invalid_json_in_json_mode_is_an_anomaly() -> None:
    assert anomalies(CHAT, JSON_OBJECT, _chat("Sure! {'a': 1}")) == ["invalid_json"]


def test_valid_json_in_json_mode_is_clean() -> None:
    assert anomalies(CHAT, JSON_OBJECT, _chat('{"a": 1}')) == []


def test_prose_without_json_mode_is_clean() -> None:
    assert anomalies(CHAT, {"messages": []}, _chat("Hello")) == []


def test_empty_answer_and_length_cut_are_anomalies() -> None:
    assert anomalies(CHAT, {}, _chat("")) == ["empty"]
    assert anomalies(CHAT, {}, _chat("Hel", finish="length")) == ["truncated"]


def test_tool_call_answer_is_neither_empty_nor_invalid_json() -> None:
    answer = _chat(None, finish="tool_calls", tool_calls=[{"id": "1", "type": "function"}])
    assert anomalies(CHAT, JSON_OBJECT, answer) == []


def test_refusal_is_named_as_such() -> None:
    assert anomalies(CHAT, JSON_OBJECT, _chat(None, refusal="I can't help")) == ["refusal"]


def test_anthropic_max_tokens_and_empty_text() -> None:
    answer = {"content": [{"type": "text", "text": ""}], "stop_reason": "max_tokens"}
    assert anomalies("/v1/messages", {}, answer) == ["empty", "truncated"]


def test_responses_api_text_is_checked_in_json_mode() -> None:
    answer = {
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "{oops"}]}],
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
    }
    payload = {"text": {"format": {"type": "json_object"}}}
    assert anomalies("/v1/responses", payload, answer) == ["invalid_json", "truncated"]


def test_unknown_shapes_give_no_anomalies() -> None:
    assert anomalies(CHAT, JSON_OBJECT, ["not", "a", "dict"]) == []
    assert anomalies("/v1/embeddings", {}, {"data": []}) == []

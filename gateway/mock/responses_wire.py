"""OpenAI Responses API wire shapes: the response object and its named stream events."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.mock.answers import Turn
from gateway.mock.streaming import frame


def _usage(turn: Turn) -> dict[str, Any]:
    answer = turn.answer
    return {
        "input_tokens": answer.prompt_tokens,
        "output_tokens": answer.completion_tokens,
        "total_tokens": answer.total_tokens,
        "input_tokens_details": {"cached_tokens": answer.cached_tokens},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def _message(turn: Turn, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": f"msg_mock_{turn.serial}",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _final_status(turn: Turn) -> str:
    return "incomplete" if turn.answer.truncated else "completed"


def response_object(turn: Turn, request: dict[str, Any], done: bool) -> dict[str, Any]:
    """The response, finished (`done`) or as first announced (in progress, no output)."""
    status = _final_status(turn) if done else "in_progress"
    incomplete = {"reason": "max_output_tokens"} if done and turn.answer.truncated else None
    return {
        "id": f"resp_mock_{turn.serial}",
        "object": "response",
        "created_at": turn.created,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": turn.model,
        "output": [_message(turn, turn.answer.text, status)] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": request.get("previous_response_id"),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": _usage(turn) if done else None,
        "metadata": request.get("metadata") or {},
    }


def response_body(turn: Turn, request: dict[str, Any]) -> bytes:
    return orjson.dumps(response_object(turn, request, done=True))


def response_events(turn: Turn, request: dict[str, Any]) -> list[bytes]:
    """The event sequence OpenAI sends for one text message, ending in response.completed."""
    item = _message(turn, "", "in_progress")
    item["content"] = []
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    done_item = _message(turn, turn.answer.text, _final_status(turn))
    at = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": response_object(turn, request, done=False)}),
        ("response.in_progress", {"response": response_object(turn, request, done=False)}),
        ("response.output_item.added", {"output_index": 0, "item": item}),
        ("response.content_part.added", {**at, "part": part}),
    ]
    events += [
        ("response.output_text.delta", {**at, "delta": piece, "logprobs": []})
        for piece in turn.answer.pieces
    ]
    events += [
        ("response.output_text.done", {**at, "text": turn.answer.text, "logprobs": []}),
        ("response.content_part.done", {**at, "part": done_item["content"][0]}),
        ("response.output_item.done", {"output_index": 0, "item": done_item}),
        ("response.completed", {"response": response_object(turn, request, done=True)}),
    ]
    return [
        frame(orjson.dumps({"type": name, **data, "sequence_number": n}), name)
        for n, (name, data) in enumerate(events)
    ]

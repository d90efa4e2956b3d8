"""Anthropic wire shapes: messages (whole and streamed), token counts, models, errors."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.mock.answers import Turn
from gateway.mock.streaming import frame

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int, code: str | None) -> str:
    if code is not None:
        return code  # Anthropic has no separate code: the scripted code is the type
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(status: int, message: str, code: str | None) -> bytes:
    error = {"type": error_type(status, code), "message": message}
    return orjson.dumps({"type": "error", "error": error})


def _usage(turn: Turn, output_tokens: int) -> dict[str, Any]:
    # Anthropic's input_tokens leave out the tokens read from the cache.
    answer = turn.answer
    return {
        "input_tokens": answer.prompt_tokens - answer.cached_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": answer.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def _stop_reason(turn: Turn) -> str:
    return "max_tokens" if turn.answer.truncated else "end_turn"


def _message(turn: Turn, done: bool) -> dict[str, Any]:
    answer = turn.answer
    return {
        "id": f"msg_mock_{turn.serial}",
        "type": "message",
        "role": "assistant",
        "model": turn.model,
        "content": [{"type": "text", "text": answer.text}] if done else [],
        "stop_reason": _stop_reason(turn) if done else None,
        "stop_sequence": None,
        "usage": _usage(turn, answer.completion_tokens if done else 1),
    }


def message_body(turn: Turn) -> bytes:
    return orjson.dumps(_message(turn, done=True))


def message_events(turn: Turn) -> list[bytes]:
    """The named events Anthropic sends for one text block, ending in message_stop."""
    block = {"type": "text", "text": ""}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": _message(turn, done=False)},
        {"type": "content_block_start", "index": 0, "content_block": block},
        {"type": "ping"},
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
        for p in turn.answer.pieces
    ]
    delta = {"stop_reason": _stop_reason(turn), "stop_sequence": None}
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": delta,
            "usage": {"output_tokens": turn.answer.completion_tokens},
        },
        {"type": "message_stop"},
    ]
    return [frame(orjson.dumps(event), event["type"]) for event in events]


def count_tokens_body(input_tokens: int) -> bytes:
    return orjson.dumps({"input_tokens": input_tokens})


MODEL_CREATED_AT = "2025-10-01T00:00:00Z"


def _model(model_id: str) -> dict[str, Any]:
    name = " ".join(part.capitalize() for part in model_id.split("-"))
    return {"type": "model", "id": model_id, "display_name": name, "created_at": MODEL_CREATED_AT}


def models_body(model_ids: list[str]) -> bytes:
    """GET /v1/models as Anthropic answers it: one page, newest first."""
    return orjson.dumps(
        {
            "data": [_model(m) for m in model_ids],
            "has_more": False,
            "first_id": model_ids[0] if model_ids else None,
            "last_id": model_ids[-1] if model_ids else None,
        }
    )


def model_body(model_id: str) -> bytes:
    return orjson.dumps(_model(model_id))

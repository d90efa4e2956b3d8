"""OpenAI wire shapes: chat and legacy completions (whole and streamed), models, errors."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.mock.answers import Answer, Turn
from gateway.mock.streaming import DONE, frame

MODEL_IDS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "text-embedding-3-small",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
)
MODEL_CREATED = 1_700_000_000
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
# Error codes OpenAI also sends as the error type (a 429 for an exhausted quota, say).
_CODES_AS_TYPES = frozenset({"insufficient_quota"})


def error_type(status: int, code: str | None) -> str:
    if code in _CODES_AS_TYPES:
        return code
    if status >= 500:
        return "server_error"
    return _ERROR_TYPES.get(status, "invalid_request_error")


def error_body(status: int, message: str, code: str | None, param: str | None = None) -> bytes:
    error = {"message": message, "type": error_type(status, code), "param": param, "code": code}
    return orjson.dumps({"error": error})


def _finish_reason(answer: Answer) -> str:
    return "length" if answer.truncated else "stop"


def usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.total_tokens,
        "prompt_tokens_details": {"cached_tokens": answer.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def chat_body(turn: Turn) -> bytes:
    message = {"role": "assistant", "content": turn.answer.text, "refusal": None}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": _finish_reason(turn.answer),
    }
    return orjson.dumps(
        {
            "id": f"chatcmpl-mock-{turn.serial}",
            "object": "chat.completion",
            "created": turn.created,
            "model": turn.model,
            "choices": [choice],
            "usage": usage(turn.answer),
        }
    )


def _stream(
    head: dict[str, Any], choices: list[dict[str, Any]], answer: Answer, include_usage: bool
) -> list[bytes]:
    """Frame one chunk per choice, then the usage chunk if asked for, then [DONE]."""
    events = []
    for choice in choices:
        chunk = {**head, "choices": [choice]}
        if include_usage:
            chunk["usage"] = None  # as OpenAI does on every chunk but the last
        events.append(frame(orjson.dumps(chunk)))
    if include_usage:
        events.append(frame(orjson.dumps({**head, "choices": [], "usage": usage(answer)})))
    events.append(DONE)
    return events


def chat_events(turn: Turn, include_usage: bool) -> list[bytes]:
    """A role chunk, one chunk per word, a finish chunk, [usage], [DONE]."""
    head = {
        "id": f"chatcmpl-mock-{turn.serial}",
        "object": "chat.completion.chunk",
        "created": turn.created,
        "model": turn.model,
    }
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": piece} for piece in turn.answer.pieces]
    choices: list[dict[str, Any]] = [
        {"index": 0, "delta": d, "logprobs": None, "finish_reason": None} for d in deltas
    ]
    finish = _finish_reason(turn.answer)
    choices.append({"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish})
    return _stream(head, choices, turn.answer, include_usage)


def _completion_head(turn: Turn) -> dict[str, Any]:
    return {
        "id": f"cmpl-mock-{turn.serial}",
        "object": "text_completion",
        "created": turn.created,
        "model": turn.model,
    }


def completion_body(turn: Turn) -> bytes:
    finish = _finish_reason(turn.answer)
    choice = {"text": turn.answer.text, "index": 0, "logprobs": None, "finish_reason": finish}
    return orjson.dumps(
        {**_completion_head(turn), "choices": [choice], "usage": usage(turn.answer)}
    )


def completion_events(turn: Turn, include_usage: bool) -> list[bytes]:
    """One chunk per word, a finish chunk, [usage], [DONE]."""
    texts = [*turn.answer.pieces, ""]
    reasons = [None] * len(turn.answer.pieces) + [_finish_reason(turn.answer)]
    choices = [
        {"text": text, "index": 0, "logprobs": None, "finish_reason": reason}
        for text, reason in zip(texts, reasons, strict=True)
    ]
    return _stream(_completion_head(turn), choices, turn.answer, include_usage)


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": "mock"}


def models_body() -> bytes:
    return orjson.dumps({"object": "list", "data": [_model(m) for m in MODEL_IDS]})


def model_body(model_id: str) -> bytes | None:
    """One model, or None when the id is not one the mock serves."""
    return orjson.dumps(_model(model_id)) if model_id in MODEL_IDS else None

"""A stored OpenAI chat or completion body, rendered as the chunks its stream would carry."""

from __future__ import annotations

from typing import Any

Chunk = dict[str, Any]
_MESSAGE_PARTS = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})


def _head(body: dict[str, Any], obj: str) -> Chunk:
    head = {"id": body.get("id"), "object": obj, "created": body.get("created")}
    head["model"] = body.get("model")
    for name in ("service_tier", "system_fingerprint"):
        if name in body:
            head[name] = body[name]
    return head


def _with_usage(head: Chunk, choices: list[Any], body: dict[str, Any], usage: bool) -> list[Chunk]:
    """Each choice in its own chunk; with `usage`, OpenAI's null usage on each, then the usage
    chunk (no choices)."""
    chunks = [{**head, "choices": [choice]} for choice in choices]
    if usage and body.get("usage") is not None:
        chunks = [{**chunk, "usage": None} for chunk in chunks]
        chunks.append({**head, "choices": [], "usage": body["usage"]})
    return chunks


def _chat_deltas(message: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """(delta, carries logprobs) in stream order: role, content, refusal, tool calls."""
    content = message.get("content")
    first = {"role": message.get("role", "assistant"), "content": "" if content else content}
    # Fields this renderer does not know (annotations, audio…) travel with the first delta.
    first.update({k: v for k, v in message.items() if k not in _MESSAGE_PARTS})
    deltas: list[tuple[dict[str, Any], bool]] = [(first, False)]
    if content:
        deltas.append(({"content": content}, True))
    if message.get("refusal"):
        deltas.append(({"refusal": message["refusal"]}, False))
    for index, call in enumerate(message.get("tool_calls") or ()):
        deltas.append(({"tool_calls": [{"index": index, **call}]}, False))
    if message.get("function_call") is not None:
        deltas.append(({"function_call": message["function_call"]}, False))
    return deltas


def chat_chunks(body: dict[str, Any], include_usage: bool) -> list[Chunk]:
    choices = []
    for choice in body["choices"]:
        index, logprobs = choice.get("index", 0), choice.get("logprobs")
        for delta, carries in _chat_deltas(choice.get("message") or {}):
            lp = logprobs if carries else None
            choices.append({"index": index, "delta": delta, "logprobs": lp, "finish_reason": None})
        end = {"index": index, "delta": {}, "logprobs": None}
        choices.append({**end, "finish_reason": choice.get("finish_reason")})
    return _with_usage(_head(body, "chat.completion.chunk"), choices, body, include_usage)


def completion_chunks(body: dict[str, Any], include_usage: bool) -> list[Chunk]:
    choices = []
    for choice in body["choices"]:
        index = choice.get("index", 0)
        text = {"text": choice.get("text", ""), "index": index, "logprobs": choice.get("logprobs")}
        choices.append({**text, "finish_reason": None})
        end = {"text": "", "index": index, "logprobs": None}
        choices.append({**end, "finish_reason": choice.get("finish_reason")})
    return _with_usage(_head(body, "text_completion"), choices, body, include_usage)

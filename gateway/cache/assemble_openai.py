"""Assemble OpenAI chat and legacy completion streams into their non-stream bodies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

Event = tuple[str, bytes]

# `obfuscation` is random padding OpenAI adds to stream chunks; it is not part of the answer.
_CHUNK_FIELDS = frozenset(
    {"id", "object", "created", "model", "system_fingerprint", "service_tier", "choices"}
    | {"usage", "obfuscation"}
)
_HEAD_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")
_DELTA_FIELDS = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})
_CHAT_CHOICE_FIELDS = frozenset({"index", "delta", "finish_reason", "logprobs"})


def _known(obj: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    if not allowed.issuperset(obj):  # checked in place: no set built for a known chunk
        raise ValueError(f"cannot assemble field {sorted(set(obj) - allowed)[0]!r}")
    return obj


def stream_chunks(events: list[Event]) -> list[dict[str, Any]]:
    """The JSON chunks before `[DONE]`; without `[DONE]` the stream did not end properly."""
    chunks: list[dict[str, Any]] = []
    for _, data in events:
        if data == b"[DONE]":
            return chunks
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict) or chunk.get("error") is not None:
            raise ValueError("an error in the stream")
        if not _CHUNK_FIELDS.issuperset(chunk):
            _known(chunk, _CHUNK_FIELDS)  # raises, naming the field
        chunks.append(chunk)
    raise ValueError("the stream ended without [DONE]")


def _body(chunks: list[dict[str, Any]], obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    """The body's head from the chunks (last value wins), its choices, and the usage chunk's."""
    head = {name: chunk[name] for chunk in chunks for name in _HEAD_FIELDS if name in chunk}
    body = {"id": head.pop("id"), "object": obj, **head, "choices": choices}
    usage = next((c["usage"] for c in reversed(chunks) if c.get("usage") is not None), None)
    if usage is not None:
        body["usage"] = usage
    return body


def _choice_deltas(chunks: list[dict[str, Any]], allowed: frozenset[str]) -> list[dict[str, Any]]:
    out = []
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            _known(choice, allowed)
            if choice.get("logprobs") is not None:
                raise ValueError("streamed logprobs are not assembled")
            out.append(choice)
    return out


@dataclass(slots=True)
class _ChatChoice:
    role: str = "assistant"
    content: list[str] | None = None
    refusal: list[str] | None = None
    tools: dict[int, dict[str, Any]] = field(default_factory=dict)
    function_call: dict[str, str] | None = None
    finish_reason: str | None = None

    def add(self, delta: dict[str, Any]) -> None:
        _known(delta, _DELTA_FIELDS)
        if delta.get("role"):
            self.role = str(delta["role"])
        content, refusal = delta.get("content"), delta.get("refusal")
        if isinstance(content, str):  # appended: a long answer arrives in thousands of pieces
            self.content = self.content or []
            self.content.append(content)
        if isinstance(refusal, str):
            self.refusal = self.refusal or []
            self.refusal.append(refusal)
        for call in delta.get("tool_calls") or ():
            self._add_tool_call(call)
        if delta.get("function_call") is not None:
            self.function_call = _concat(self.function_call or {}, delta["function_call"])

    def _add_tool_call(self, call: dict[str, Any]) -> None:
        _known(call, frozenset({"index", "id", "type", "function"}))
        slot = self.tools.setdefault(
            int(call["index"]), {"id": None, "type": "function", "function": {}}
        )
        if call.get("id"):
            slot["id"] = call["id"]
        if call.get("type"):
            slot["type"] = call["type"]
        slot["function"] = _concat(slot["function"], call.get("function") or {})

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role,
            "content": None if self.content is None else "".join(self.content),
            "refusal": None if self.refusal is None else "".join(self.refusal),
        }
        if self.tools:
            calls = [self.tools[i] for i in sorted(self.tools)]
            if any(not c["id"] or not c["function"].get("name") for c in calls):
                raise ValueError("a tool call without an id or a name")
            message["tool_calls"] = calls
        if self.function_call is not None:
            message["function_call"] = self.function_call
        return message


def _concat(into: dict[str, str], delta: dict[str, Any]) -> dict[str, str]:
    """Function name and arguments arrive in pieces, each to be appended."""
    _known(delta, frozenset({"name", "arguments"}))
    out = dict(into)
    for name in ("name", "arguments"):
        if isinstance(delta.get(name), str):
            out[name] = out.get(name, "") + delta[name]
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError("text must be a string")
    return value


def assemble_chat(events: list[Event]) -> dict[str, Any]:
    """One pass over the chunks' choices. Most chunks of a long answer carry one piece of
    text and nothing else: that piece is appended at once, the rest goes through `add`."""
    chunks = stream_chunks(events)
    choices: dict[int, _ChatChoice] = {}
    for chunk in chunks:
        for raw in chunk.get("choices") or ():
            if not _CHAT_CHOICE_FIELDS.issuperset(raw) or raw.get("logprobs") is not None:
                _choice_deltas([{"choices": [raw]}], _CHAT_CHOICE_FIELDS)  # raises, saying why
            index = int(raw["index"])
            choice = choices.get(index)
            if choice is None:
                choice = choices[index] = _ChatChoice()
            delta = raw.get("delta") or {}
            text = delta.get("content") if type(delta) is dict and len(delta) == 1 else None
            if type(text) is str and choice.content is not None:
                choice.content.append(text)
            else:
                choice.add(delta)
            if raw.get("finish_reason") is not None:
                choice.finish_reason = raw["finish_reason"]
    rendered = [
        {"index": i, "message": c.message(), "logprobs": None, "finish_reason": c.finish_reason}
        for i, c in sorted(choices.items())
    ]
    return _body(chunks, "chat.completion", rendered)


def assemble_completion(events: list[Event]) -> dict[str, Any]:
    chunks = stream_chunks(events)
    texts: dict[int, list[str]] = {}
    reasons: dict[int, str | None] = {}
    allowed = frozenset({"index", "text", "finish_reason", "logprobs"})
    for raw in _choice_deltas(chunks, allowed):
        index = int(raw["index"])
        texts.setdefault(index, []).append(_text(raw.get("text")))
        if raw.get("finish_reason") is not None or index not in reasons:
            reasons[index] = raw.get("finish_reason")
    rendered = [
        {"text": "".join(texts[i]), "index": i, "logprobs": None, "finish_reason": reasons[i]}
        for i in sorted(texts)
    ]
    return _body(chunks, "text_completion", rendered)

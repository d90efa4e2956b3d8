"""Assemble an Anthropic messages stream into the message object a non-stream call returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

Event = tuple[str, bytes]

# Block types whose stream is understood, and the delta types each may receive. Others
# (server tool results, citations) are not assembled, so such answers are not stored.
_BLOCK_DELTAS: dict[str, frozenset[str]] = {
    "text": frozenset({"text_delta"}),
    "tool_use": frozenset({"input_json_delta"}),
    "thinking": frozenset({"thinking_delta", "signature_delta"}),
    "redacted_thinking": frozenset(),
}
# Delta type -> the block field its text is appended to.
_APPENDS = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature"}


@dataclass(slots=True)
class _Block:
    block: dict[str, Any]
    partial_json: list[str] = field(default_factory=list)
    # Text, thinking and signature in their pieces, joined at the block's stop: a long
    # answer arrives in thousands of deltas, and adding each to a string copies it all.
    pieces: dict[str, list[str]] = field(default_factory=dict)
    stopped: bool = False

    @classmethod
    def start(cls, block: dict[str, Any]) -> _Block:
        if block["type"] not in _BLOCK_DELTAS:
            raise ValueError(f"cannot assemble a {block['type']!r} block")
        return cls(dict(block))

    def add(self, delta: dict[str, Any]) -> None:
        kind = delta["type"]
        if kind not in _BLOCK_DELTAS[self.block["type"]] or self.stopped:
            raise ValueError(f"unexpected {kind!r}")
        if kind == "input_json_delta":
            self.partial_json.append(_str(delta["partial_json"]))
            return
        name = _APPENDS[kind]
        parts = self.pieces.get(name)
        if parts is None:
            parts = self.pieces[name] = [_str(self.block.get(name, ""))]
        parts.append(_str(delta[name]))

    def stop(self) -> None:
        for name, parts in self.pieces.items():
            self.block[name] = "".join(parts)
        if self.block["type"] == "tool_use":
            raw = "".join(self.partial_json)
            tool_input = orjson.loads(raw) if raw else self.block.get("input", {})
            if not isinstance(tool_input, dict):
                raise TypeError("a tool input must be an object")
            self.block["input"] = tool_input
        self.stopped = True


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


@dataclass(slots=True)
class _Message:
    message: dict[str, Any] | None = None
    blocks: dict[int, _Block] = field(default_factory=dict)
    stopped: bool = False

    def on(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "message_start":
            self.message = dict(event["message"])
        elif kind == "content_block_start":
            self.blocks[int(event["index"])] = _Block.start(event["content_block"])
        elif kind == "content_block_delta":
            self.blocks[int(event["index"])].add(event["delta"])
        elif kind == "content_block_stop":
            self.blocks[int(event["index"])].stop()
        elif kind == "message_delta":
            self._finish(event)
        elif kind == "message_stop":
            self.stopped = True
        elif kind != "ping":
            raise ValueError(f"cannot assemble a {kind!r} event")  # `error` included

    def _finish(self, event: dict[str, Any]) -> None:
        """message_delta: top-level fields (stop_reason…) and the cumulative usage."""
        if self.message is None:
            raise ValueError("message_delta before message_start")
        self.message.update(event["delta"])
        usage = {**(self.message.get("usage") or {})}
        usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        self.message["usage"] = usage

    def result(self) -> dict[str, Any]:
        if self.message is None or not self.stopped:
            raise ValueError("the stream ended before message_stop")
        if not all(b.stopped for b in self.blocks.values()):
            raise ValueError("a content block never stopped")
        return {**self.message, "content": [self.blocks[i].block for i in sorted(self.blocks)]}


def assemble_message(events: list[Event]) -> dict[str, Any]:
    message = _Message()
    for _, data in events:
        if message.stopped:
            break
        event = orjson.loads(data)
        if not isinstance(event, dict):
            raise TypeError("an event must be an object")
        message.on(event)
    return message.result()

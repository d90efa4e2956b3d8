"""A stored Anthropic message, rendered as the named events its stream would carry."""

from __future__ import annotations

from typing import Any

import orjson

NamedEvent = tuple[str, dict[str, Any]]


def _block_events(index: int, block: dict[str, Any]) -> list[NamedEvent]:
    """content_block_start with the block emptied, its deltas, then content_block_stop."""
    kind = block.get("type")
    deltas: list[dict[str, Any]] = []
    start = dict(block)
    if kind == "text":
        start["text"] = ""
        deltas = [{"type": "text_delta", "text": block.get("text", "")}]
    elif kind == "tool_use":
        start["input"] = {}
        partial = orjson.dumps(block.get("input", {})).decode()
        deltas = [{"type": "input_json_delta", "partial_json": partial}]
    elif kind == "thinking":
        start.update(thinking="", signature="")
        deltas = [
            {"type": "thinking_delta", "thinking": block.get("thinking", "")},
            {"type": "signature_delta", "signature": block.get("signature", "")},
        ]
    # Any other block (redacted thinking, server tool results) arrives whole in its start.
    events: list[NamedEvent] = [
        (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
    ]
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
        for d in deltas
    ]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def message_events(body: dict[str, Any]) -> list[NamedEvent]:
    usage = dict(body.get("usage") or {})
    # As the API does: the start announces the input side; message_delta carries the total.
    start_usage = {**usage, "output_tokens": min(1, int(usage.get("output_tokens", 0)))}
    # How the message ended comes at its end, in message_delta, where the SDKs read it.
    delta = {"stop_reason": body.get("stop_reason"), "stop_sequence": body.get("stop_sequence")}
    if "stop_details" in body:  # why a refusal stopped
        delta["stop_details"] = body["stop_details"]
    start = {**body, "content": [], **dict.fromkeys(delta), "usage": start_usage}
    events: list[NamedEvent] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(body.get("content") or ()):
        events += _block_events(index, block)
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events

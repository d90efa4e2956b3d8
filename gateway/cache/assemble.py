"""Rebuild a streamed answer, from the raw chunks the upstream sent, as its non-stream JSON.

Anything the assembler does not understand (an event type, a delta field, logprobs, an error
event, a missing end) means the stream is not stored: a cache must not guess.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.cache.assemble_anthropic import assemble_message
from gateway.cache.assemble_openai import assemble_chat, assemble_completion
from gateway.cache.policy import Kind
from gateway.sse import SSEParser

Event = tuple[str, bytes]

_ASSEMBLERS: dict[Kind, Callable[[list[Event]], dict[str, Any]]] = {
    "chat": assemble_chat,
    "completion": assemble_completion,
    "message": assemble_message,
}


def assemble(kind: Kind, chunks: list[bytes]) -> dict[str, Any] | None:
    """The complete answer object, or None when the stream cannot be rebuilt faithfully."""
    assembler = _ASSEMBLERS.get(kind)
    if assembler is None:
        return None
    events = SSEParser().feed(b"".join(chunks))
    try:
        return assembler(events)
    # A shape other than the documented one surfaces as one of these: do not store.
    except (ValueError, KeyError, TypeError, AttributeError, orjson.JSONDecodeError):
        return None

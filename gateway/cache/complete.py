"""Whether an answer is a complete success, the only kind the cache stores."""

from __future__ import annotations

from typing import Any

from gateway.cache.policy import Kind

# Reasons that end an answer on purpose. Anything else (null, an unknown reason, Anthropic's
# pause_turn, which asks the client to continue) is not stored: safe for new reasons too.
OPENAI_FINISH_REASONS = frozenset(
    {"stop", "length", "tool_calls", "content_filter", "function_call"}
)
ANTHROPIC_STOP_REASONS = frozenset(
    {"end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"}
)


def is_complete(kind: Kind, body: Any) -> bool:
    """A JSON answer object with a terminal reason on every choice, and no error object."""
    if not isinstance(body, dict) or body.get("error") is not None:
        return False
    if kind == "message":
        return body.get("type") == "message" and body.get("stop_reason") in ANTHROPIC_STOP_REASONS
    if kind == "embedding":
        data = body.get("data")
        return isinstance(data, list) and bool(data)
    choices = body.get("choices")
    return (
        isinstance(choices, list)
        and bool(choices)
        and all(
            isinstance(c, dict) and c.get("finish_reason") in OPENAI_FINISH_REASONS for c in choices
        )
    )

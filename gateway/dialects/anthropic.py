"""The Anthropic dialect: `{"type": "error", "error": {type, message}}` errors."""

from __future__ import annotations

import orjson

from gateway.dialects.base import Dialect
from gateway.errors import GatewayError

# Anthropic's error types; anything else is reported as a generic api_error.
_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "timeout_error",
    }
)


class AnthropicDialect(Dialect):
    name = "anthropic"
    model_endpoints = frozenset({"/v1/messages", "/v1/messages/count_tokens"})

    def error_body(self, err: GatewayError) -> bytes:
        return orjson.dumps({"type": "error", "error": _error_object(err)})

    def stream_error_event(self, err: GatewayError) -> bytes:
        body = orjson.dumps({"type": "error", "error": _error_object(err)})
        return b"event: error\ndata: " + body + b"\n\n"


# Our types that Anthropic spells differently.
_RENAMED = {"insufficient_quota": "rate_limit_error"}


def _error_object(err: GatewayError) -> dict[str, str]:
    kind = _RENAMED.get(err.error_type, err.error_type)
    kind = kind if kind in _TYPES else "api_error"
    return {"type": kind, "message": err.message}


ANTHROPIC = AnthropicDialect()

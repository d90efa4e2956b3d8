"""The OpenAI dialect: `{"error": {message, type, param, code}}` errors."""

from __future__ import annotations

import orjson

from gateway.dialects.base import Dialect
from gateway.errors import GatewayError


class OpenAIDialect(Dialect):
    name = "openai"
    model_endpoints = frozenset(
        {
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/responses",
        }
    )

    def error_body(self, err: GatewayError) -> bytes:
        return orjson.dumps({"error": _error_object(err)})

    def stream_error_event(self, err: GatewayError) -> bytes:
        return b"data: " + orjson.dumps({"error": _error_object(err)}) + b"\n\n"


def _error_object(err: GatewayError) -> dict[str, str | None]:
    return {"message": err.message, "type": err.error_type, "param": err.param, "code": err.code}


OPENAI = OpenAIDialect()

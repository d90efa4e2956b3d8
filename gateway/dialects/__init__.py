"""What the client speaks: chosen from the request path and headers."""

from __future__ import annotations

from aiohttp import web

from gateway.dialects.anthropic import ANTHROPIC
from gateway.dialects.base import Dialect
from gateway.dialects.openai import OPENAI

__all__ = ["ANTHROPIC", "OPENAI", "Dialect", "dialect_for"]


def dialect_for(request: web.Request) -> Dialect:
    """Anthropic for `/v1/messages*` or when the client sends Anthropic's version header (on
    any path: an unknown one too), else OpenAI."""
    if request.path.startswith("/v1/messages") or "anthropic-version" in request.headers:
        return ANTHROPIC
    return OPENAI

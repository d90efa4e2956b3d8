"""What the client speaks: chosen from the request path and headers."""

from __future__ import annotations

from aiohttp import web

from gateway.dialects.anthropic import ANTHROPIC
from gateway.dialects.base import Dialect
from gateway.dialects.openai import OPENAI

__all__ = ["ANTHROPIC", "OPENAI", "Dialect", "dialect_for"]


def dialect_for(request: web.Request) -> Dialect:
    """A model endpoint's own: Anthropic for `/v1/messages*`, OpenAI for its model endpoints,
    whatever the headers (the dialect decides which paths are priced, budgeted and rate
    limited: a header must not make a paid endpoint a free pass-through). On any other path,
    Anthropic when the client sends Anthropic's version header, else OpenAI."""
    path = request.path
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path in _OPENAI_PRICED:
        return OPENAI
    return ANTHROPIC if "anthropic-version" in request.headers else OPENAI


_OPENAI_PRICED = OPENAI.model_endpoints

"""Stage: authenticate the gateway key. Acts first; nothing after it runs for an unknown key."""

from __future__ import annotations

from aiohttp import web

from gateway.context import RequestContext
from gateway.errors import Unauthorized
from gateway.pipeline import Next


def presented_key(request: web.Request) -> str | None:
    """The key from `Authorization: Bearer` (OpenAI SDK) or `x-api-key` (Anthropic SDK)."""
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = request.headers.get("x-api-key", "").strip()
    return api_key or None


async def authenticate(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
    secret = presented_key(ctx.request)
    if secret is None:
        raise Unauthorized(
            "Missing gateway key: send it as 'Authorization: Bearer <key>' (OpenAI SDK) "
            "or 'x-api-key: <key>' (Anthropic SDK).",
            code="missing_api_key",
        )
    key = ctx.runtime.find_key(secret)
    if key is None:
        # SECURITY: the presented key is never echoed, not even in part.
        raise Unauthorized(
            "Unknown gateway key. Check the key your application is configured with."
        )
    ctx.key = key
    return await call_next(ctx)

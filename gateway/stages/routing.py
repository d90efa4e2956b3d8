"""Stage: choose the route for (path, model) among those the key may use; rewrite the model."""

from __future__ import annotations

from aiohttp import web

from gateway.context import RequestContext
from gateway.errors import Forbidden, NotFound
from gateway.pipeline import Next
from gateway.runtime import CompiledRoute
from gateway.stages.body import reencode


async def choose_route(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
    route = _select(ctx)
    ctx.route = route.config
    ctx.provider = route.provider
    headers = ctx.response_headers
    headers["x-gateway-route"] = route.config.name
    headers["x-gateway-attempts"] = "0"  # until a try is made (a refusal, a cache hit: none)
    ctx.upstream_model = route.config.model or ctx.model
    ctx.upstream_body = ctx.body
    if ctx.payload is not None and ctx.upstream_model != ctx.model:
        # Only a rewrite re-serialises; orjson keeps key order and every unknown field.
        ctx.payload["model"] = ctx.upstream_model
        ctx.upstream_body = reencode(ctx.payload)
    return await call_next(ctx)


# Choices remembered per config (Runtime.chosen): paths and models are the clients' own.
CHOICES_KEPT = 4096


def _select(ctx: RequestContext) -> CompiledRoute:
    """First route in config order that matches the path, the model and the client's dialect.

    A route serves only its provider's wire format: the body is passed through, not translated.
    """
    key = ctx.authenticated_key()
    path, model = ctx.request.path, ctx.model or ""
    runtime = ctx.runtime
    asked = (ctx.dialect.name, path, model, key.name)
    known = runtime.chosen.get(asked)
    if known is not None:
        return known
    headers, size = ctx.request.headers, len(ctx.body)
    matching = [
        r
        for r in runtime.routes
        if r.provider.kind == ctx.dialect.name
        and r.matches(path, model)
        and r.accepts(key.name, headers, size)
    ]
    allowed = key.routes
    for route in matching:
        if "*" in allowed or route.config.name in allowed:
            if len(runtime.chosen) < CHOICES_KEPT and runtime.choice_by_name:
                runtime.chosen[asked] = route
            return route
    if matching:
        what = f"model '{model}' on {path}" if model else path
        raise Forbidden(f"The key '{key.name}' is not allowed to use {what}.")
    if model:
        raise NotFound(
            f"The model '{model}' is not served on {path} by this gateway.",
            code="model_not_found",
            param="model",
        )
    raise NotFound(f"No route serves {ctx.request.method} {path}.")

"""Thin HTTP handlers: build the request context, run the pipeline, settle, log."""

from __future__ import annotations

import asyncio

import orjson
import structlog
from aiohttp import web

from gateway.context import RequestContext
from gateway.dialects import dialect_for
from gateway.errors import GatewayError
from gateway.logs import log_request
from gateway.metrics import METRICS
from gateway.middleware import CONTEXT, REQUEST_ID
from gateway.observe import record_request
from gateway.pipeline import Next
from gateway.resilience import RESILIENCE, readiness_detail
from gateway.runtime import Runtime
from gateway.store import COMMAND_TIMEOUT_S, Store

_log = structlog.get_logger("gateway.routes")
RUNTIME = web.AppKey("runtime", Runtime)
PIPELINE: web.AppKey[Next] = web.AppKey("pipeline")
STORE: web.AppKey[Store] = web.AppKey("store")


async def proxy(request: web.Request) -> web.StreamResponse:
    ctx = RequestContext(
        request=request,
        runtime=request.app[RUNTIME],
        request_id=request[REQUEST_ID],
        dialect=dialect_for(request),
    )
    request[CONTEXT] = ctx
    request.app[METRICS].in_flight.inc()
    try:
        response = await request.app[PIPELINE](ctx)
        ctx.status = response.status
        return response
    except GatewayError as err:
        ctx.status, ctx.error_code = err.status, err.code
        ctx.outcome = "rejected" if err.status < 500 else "failed"
        raise
    except asyncio.CancelledError:
        ctx.outcome = "client_disconnected"
        raise
    except Exception:
        ctx.status, ctx.outcome = 500, "failed"
        raise
    finally:
        request.app[METRICS].in_flight.dec()
        await finish(ctx)


async def finish(ctx: RequestContext) -> None:
    """Run the context's finish hooks, then write the request's one log line and metrics."""
    for hook in ctx.on_finish:
        try:
            await hook(ctx)
        except Exception:  # the answer is already decided; a failing hook must not change it
            _log.exception("finish_hook_failed", request_id=ctx.request_id)
    record_request(ctx, log_request(ctx))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when a config is loaded and the store answers. Open circuits are shown but do not
    make the gateway unready: it still answers, from a fallback or with a fast 503."""
    store = request.app[STORE]
    circuits = readiness_detail(request.app[RESILIENCE])
    try:
        await asyncio.wait_for(store.ping(), COMMAND_TIMEOUT_S * 2)
    except Exception as exc:  # any store failure means "not ready", with its reason
        store_error = f"unreachable ({type(exc).__name__})"
        body = {"status": "unavailable", "store": store_error, **circuits}
        return web.Response(status=503, body=orjson.dumps(body), content_type="application/json")
    return web.json_response({"status": "ready", "store": "ok", **circuits})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_route("*", "/v1/{tail:.*}", proxy)

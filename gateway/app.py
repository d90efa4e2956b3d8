"""create_app: wiring only. Long-lived resources live in cleanup contexts and typed app keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiohttp import web

from gateway.config import GatewayConfig
from gateway.middleware import edge_middleware, stamp_headers
from gateway.pipeline import Stage, compose
from gateway.routes import PIPELINE, RUNTIME, STORE, add_routes
from gateway.runtime import Runtime
from gateway.stages.auth import authenticate
from gateway.stages.body import read_body
from gateway.stages.routing import choose_route
from gateway.store import open_store
from gateway.upstream import HTTP_SESSION, call_upstream

# The request path, in order (DESIGN.md): each stage may answer itself or call the next.
DEFAULT_STAGES: tuple[Stage, ...] = (
    authenticate,  # gateway key → ctx.key
    read_body,  # size limit, JSON, model, stream flag
    choose_route,  # route, provider, model rewrite
    call_upstream,  # terminal: the provider's answer, buffered or streamed
)


def create_app(config: GatewayConfig, stages: Sequence[Stage] = DEFAULT_STAGES) -> web.Application:
    app = web.Application(
        middlewares=[edge_middleware], client_max_size=config.server.max_body_bytes
    )
    app[RUNTIME] = Runtime.build(config)
    app[PIPELINE] = compose(stages)
    app.cleanup_ctx.append(_http_session)
    app.cleanup_ctx.append(_store)
    app.on_response_prepare.append(stamp_headers)
    add_routes(app)
    return app


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    """One pooled upstream session with keep-alive, shared by every provider."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        trust_env=False,
    )
    app[HTTP_SESSION] = session
    yield
    await session.close()


async def _store(app: web.Application) -> AsyncIterator[None]:
    store = open_store(app[RUNTIME].config.storage.url)
    app[STORE] = store
    yield
    await store.aclose()

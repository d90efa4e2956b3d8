"""create_app: wiring only. Long-lived resources live in cleanup contexts and typed app keys."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.admin import add_admin_routes
from gateway.alerts import announce
from gateway.cache.state import cache_state
from gateway.config import GatewayConfig
from gateway.drain import CUT_GRACE_S, DRAIN, Drain
from gateway.exposition import EXPORTER, metrics_endpoint, observability
from gateway.metrics import METRICS, Metrics
from gateway.middleware import edge_middleware
from gateway.observe import timed_upstream
from gateway.pipeline import Stage, compose
from gateway.resilience import RESILIENCE, Resilience
from gateway.routes import PIPELINE, RUNTIME, STORE, add_routes
from gateway.runtime import Runtime
from gateway.sites import SITES, Sites
from gateway.stages.auth import authenticate
from gateway.stages.body import read_body
from gateway.stages.cache import cache_responses
from gateway.stages.limits import UNPRICED_SEEN, enforce_limits
from gateway.stages.routing import choose_route
from gateway.stages.usage import ensure_stream_usage
from gateway.stats_export import SnapshotExporter
from gateway.store import open_store
from gateway.store.accounting import (
    ACCOUNTING,
    Accounting,
    Crossing,
    Scope,
    StoreUnavailable,
)
from gateway.store.coalesce import BACKGROUND
from gateway.store_guard import STORE_BREAKER, StoreBreaker, guard_store
from gateway.upstream import HTTP_SESSION, call_upstream

# The request path, in order (DESIGN.md): each stage may answer itself or call the next.
DEFAULT_STAGES: tuple[Stage, ...] = (
    authenticate,  # gateway key → ctx.key
    read_body,  # size limit, JSON, model, stream flag
    choose_route,  # route, provider, model rewrite
    ensure_stream_usage,  # OpenAI streams report usage (taken out again for the client)
    enforce_limits,  # rate limits, budget reservation; the bill once the answer is done
    cache_responses,  # answer from the cache, or store the answer of a miss
    call_upstream,  # terminal: the provider's answer, buffered or streamed
)


def create_app(
    config: GatewayConfig,
    stages: Sequence[Stage] = DEFAULT_STAGES,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """`registry`: where the metrics are registered (a fresh one by default)."""
    app = web.Application(
        middlewares=[edge_middleware], client_max_size=config.server.max_body_bytes
    )
    app[RUNTIME] = Runtime.build(config)
    app[PIPELINE] = compose([*stages[:-1], timed_upstream(stages[-1])])
    app[METRICS] = Metrics(registry or CollectorRegistry(), app[RUNTIME])
    app[EXPORTER] = SnapshotExporter(app[METRICS])
    app[RESILIENCE] = Resilience()  # circuits, retry budgets and counters of this process
    app[UNPRICED_SEEN] = set()
    app[DRAIN] = Drain()  # requests in flight, for a graceful shutdown
    admin = config.admin
    app[SITES] = Sites(separate_admin=admin is not None and admin.listen is not None)
    app.cleanup_ctx.append(_http_session)
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(cache_state)  # after the store: the cache uses it
    app.cleanup_ctx.append(observability)  # after the store: the request log uses it
    app.on_shutdown.append(_finish_requests)  # before the cleanup closes the store
    add_routes(app)
    add_admin_routes(app)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


async def _finish_requests(app: web.Application) -> None:
    await app[DRAIN].finish_pending(CUT_GRACE_S)


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    """One pooled upstream session with keep-alive, shared by every provider."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        trust_env=False,
        # SECURITY: one session serves every client; a cookie a provider set on one client's
        # request is not kept, so it never rides along on another's.
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    app[HTTP_SESSION] = session
    yield
    await session.close()


async def _store(app: web.Application) -> AsyncIterator[None]:
    storage = app[RUNTIME].config.storage
    metrics = app[METRICS]
    breaker = StoreBreaker(
        failures=storage.breaker_failures,
        open_s=storage.breaker_open_s,
        on_change=lambda state: metrics.store_circuit_state.set(2 if state == "open" else 0),
    )
    app[STORE_BREAKER] = breaker
    embedded = storage.url.startswith("memory://")
    store = guard_store(open_store(storage.url), breaker, limit_retries=not embedded)
    app[STORE] = store
    accounting = app[ACCOUNTING] = Accounting(store)
    accounting.on_late_crossings = functools.partial(_announce_late, app)
    sweeper = asyncio.create_task(_sweep_forever(accounting))
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    # The statistics summed since the last flush, and the spend served unchecked.
    await accounting.flush_stats()
    accounting.report_unsent()
    await store.aclose()


def _announce_late(
    app: web.Application, key: str, scopes: Sequence[Scope], crossings: list[Crossing]
) -> None:
    """Thresholds crossed by spend charged after a store outage, by the key's current config."""
    config = next((k for k in app[RUNTIME].config.keys if k.name == key), None)
    announce(app, config, scopes, crossings)


SWEEP_INTERVAL_S = 5.0


async def _sweep_forever(accounting: Accounting) -> None:
    """Charge reservations left by crashed processes (every replica does it; it is idempotent)."""
    BACKGROUND.set(True)
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_S)
        with contextlib.suppress(StoreUnavailable):
            await accounting.sweep()

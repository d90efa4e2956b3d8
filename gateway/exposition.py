"""GET /metrics, single or multiprocess, and the observability resources an app holds.

Multiprocess mode: when `PROMETHEUS_MULTIPROC_DIR` names a directory (set before the worker
processes start, emptied by whoever starts them), every worker writes its metrics there and
/metrics, on any worker, serves the sum (prometheus-client's MultiProcessCollector), and the
budgets as that worker read them from the store for the scrape (`Metrics.budgets`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from gateway.metrics import METRICS
from gateway.requestlog import REQUEST_LOG, RequestLog, size_from_env
from gateway.routes import RUNTIME, STORE
from gateway.stats_export import SnapshotExporter, refresh_from_store

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Multiprocess mode: how often each worker copies its in-process counters to its files.
SYNC_INTERVAL_S = 5.0

EXPORTER = web.AppKey("snapshot_exporter", SnapshotExporter)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render(
    registry: CollectorRegistry, accept: str, directory: str | None, own: Collector | None = None
) -> tuple[bytes, str]:
    """The exposition body and its content type (OpenMetrics when the scraper asks for it).
    In multiprocess mode: the workers' files, and `own`, which this worker reports alone."""
    if directory is not None:
        registry = CollectorRegistry()
        # prometheus-client's multiprocess module has no annotations
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        if own is not None:
            registry.register(own)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


async def metrics_endpoint(request: web.Request) -> web.Response:
    app = request.app
    app[EXPORTER].sync(app)
    await refresh_from_store(app)
    metrics, accept = app[METRICS], request.headers.get("Accept", "")
    directory = multiprocess_dir()
    if directory is None:
        body, content_type = render(metrics.registry, accept, None)
    else:  # merging every worker's files reads the disk: keep it off the event loop
        body, content_type = await asyncio.to_thread(
            render, metrics.registry, accept, directory, metrics.budgets
        )
    return web.Response(body=body, headers={"Content-Type": content_type})


async def observability(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context, after the store's: the request log, and the multiprocess sync."""
    url = app[RUNTIME].config.storage.url
    log = RequestLog(
        app[STORE], app[METRICS], size_from_env(), exact_trim=url.startswith("memory://")
    )
    app[REQUEST_LOG] = log
    directory = multiprocess_dir()
    syncer = asyncio.create_task(_sync_forever(app)) if directory else None
    yield
    if syncer is not None:
        syncer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await syncer
        app[EXPORTER].sync(app)
        mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]
    await log.aclose()


async def _sync_forever(app: web.Application) -> None:
    """A worker that is not scraped still writes its counters for the one that is."""
    while True:
        await asyncio.sleep(SYNC_INTERVAL_S)
        app[EXPORTER].sync(app)

"""Running the gateway: the event loop, the sites, signals (drain, reload), start-up messages."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import secrets
import signal
from collections.abc import Coroutine
from typing import Any

import structlog
from aiohttp import web

from gateway.app import create_app
from gateway.config import ConfigError, GatewayConfig, ServerConfig
from gateway.drain import DRAIN, drain
from gateway.logs import configure_logging
from gateway.metrics import METRICS
from gateway.reload import CONFIG_SOURCE, ConfigSource, reload_config
from gateway.server_limits import GatewayRunner, quiet_malformed_requests
from gateway.sites import check_listen, start_sites

KEY_PREFIX = "gk-"
# Under a supervisor: how often a worker checks that its supervisor is still there.
ORPHAN_CHECK_S = 1.0

_log = structlog.get_logger("gateway")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (measurably faster for a proxy), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def runner_for(app: web.Application, server: ServerConfig | None = None) -> web.AppRunner:
    """A runner with the server's protections (see `GatewayRunner`), for the gateway's app
    (which counts the slow connections closed) or another one served beside it (the mock)."""
    quiet_malformed_requests()
    metrics = app.get(METRICS)
    counted = metrics.slow_connections_closed.inc if metrics is not None else None
    return GatewayRunner(app, server or ServerConfig(), counted)


def serve(source: ConfigSource, config: GatewayConfig) -> int:
    """Serve until SIGTERM or SIGINT, then drain; the process's exit code."""
    config = source.apply(config)
    check_listen(config, source.path)
    if config.server.workers > 1 and not source.supervised:
        from gateway.workers import supervise

        return supervise(source.path, config)
    configure_logging(config.logging)
    loop = new_event_loop()
    try:
        return loop.run_until_complete(_run(source, config))
    finally:
        loop.close()


async def _run(source: ConfigSource, config: GatewayConfig) -> int:
    app = create_app(config)
    app[CONFIG_SOURCE] = source
    runner = runner_for(app, config.server)
    await runner.setup()
    try:
        sites = await start_sites(runner, config, reuse_port=source.supervised)
    except OSError as exc:
        _log.error(
            "cannot_listen", host=config.server.host, port=config.server.port, error=str(exc)
        )
        await runner.cleanup()
        return 1
    tune_gc()
    background: set[asyncio.Task[Any]] = set()
    stop = _on_signals(app, background)
    if source.supervised:
        _spawn(background, _stop_when_orphaned(stop))
    _log.info(
        "listening",
        url=f"http://{config.server.host}:{config.server.port}",
        admin=[site.name for site in sites[:-1]] or None,
        routes=len(config.routes),
        pid=os.getpid(),
    )
    await stop.wait()
    try:
        await drain(app, runner, sites, config.server.drain_timeout_s)
    finally:
        for task in background:
            task.cancel()
    return 0


# Young-generation collections every this many allocations (Python's default: 700). A
# request allocates hundreds of short-lived objects that reference counting frees anyway;
# collecting about three times less often saved a few percent of CPU for about 15 MiB more
# at the peak (10,000 saved little more, for 30 MiB).
GC_THRESHOLD = (2_000, 50, 100)


def tune_gc() -> None:
    """Once started: what start-up built (modules, config, app) lives as long as the process,
    so it is frozen out of every later collection; then collections are made rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def _on_signals(app: web.Application, background: set[asyncio.Task[Any]]) -> asyncio.Event:
    """SIGTERM/SIGINT: drain (a second one: stop waiting for streams). SIGHUP: reload."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stop() -> None:
        if stop.is_set():
            app[DRAIN].hurry()
        stop.set()

    def on_reload() -> None:
        _spawn(background, _reload_logged(app))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    if app[CONFIG_SOURCE].reload_held():  # asked while starting, maybe after the file was read
        on_reload()
    return stop


async def _reload_logged(app: web.Application) -> None:
    """A SIGHUP reload: its outcome is in the log (reload_config writes it) and the metrics."""
    try:
        await reload_config(app)
    except ConfigError:
        pass  # logged and counted; the running config stays
    except Exception:  # a reload must never take the server down
        _log.exception("config_reload_failed")


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    """A worker whose supervisor died (SIGKILL) drains and exits rather than live on alone."""
    parent = os.getppid()
    while True:  # no event tells a process that its parent died: look now and then
        await asyncio.sleep(ORPHAN_CHECK_S)
        if os.getppid() != parent:
            break
    stop.set()
    _log.warning("supervisor_gone", parent=parent)


def _spawn(tasks: set[asyncio.Task[Any]], coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def new_key() -> tuple[str, str]:
    """A random gateway key and its sha256 (hex), which is all the config stores."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()

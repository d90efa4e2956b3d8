"""Hot reload: re-read the config file and swap the Runtime that new requests start with.

Requests in flight keep the Runtime they started with (`ctx.runtime`). Settings applied when
the server starts (storage, server, logging, admin.listen) keep their running values, and a
reload that changes them says so in the log.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.metrics import METRICS
from gateway.routes import RUNTIME
from gateway.runtime import Runtime
from gateway.sites import check_listen

_log = structlog.get_logger("gateway.reload")
RESTART_ONLY = ("storage", "server", "logging")


@dataclass(slots=True)
class ConfigSource:
    """Where the running config came from, and the command-line values laid over it."""

    path: str
    host: str | None = None
    port: int | None = None
    workers: int | None = None
    # Under `--workers`: a reload asked of one worker is passed on to the others.
    supervised: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Whether a SIGHUP came while the process was starting (`gateway.cli.hold_reloads`).
    reload_held: Callable[[], bool] = lambda: False

    def apply(self, config: GatewayConfig) -> GatewayConfig:
        return with_overrides(config, self.host, self.port, self.workers)


CONFIG_SOURCE = web.AppKey("config_source", ConfigSource)


@dataclass(frozen=True, slots=True)
class Reloaded:
    routes: int
    keys: int
    restart_required: list[str]


def with_overrides(
    config: GatewayConfig, host: str | None, port: int | None, workers: int | None
) -> GatewayConfig:
    """The config with `gateway serve --host/--port/--workers` applied."""
    update = {
        name: value
        for name, value in (("host", host), ("port", port), ("workers", workers))
        if value is not None
    }
    if not update:
        return config
    return config.model_copy(update={"server": config.server.model_copy(update=update)})


async def reload_config(app: web.Application) -> Reloaded:
    """Load, check and swap in the config file; raises ConfigError (and keeps the running
    config) when it is invalid."""
    source = app.get(CONFIG_SOURCE)
    if source is None:
        raise ConfigError("this gateway was not started from a config file; nothing to reload")
    async with source.lock:
        try:
            loaded = source.apply(await asyncio.to_thread(load_config, source.path))
            check_listen(loaded, source.path)
            merged, restart_required = keep_restart_only(app[RUNTIME].config, loaded)
            runtime = Runtime.build(merged)
        except Exception as exc:  # a ConfigError names the file and its problem; else ours
            app[METRICS].config_reloads.labels("error").inc()
            _log.error(
                "config_reload_failed",
                error=str(exc),
                kept="the running config",
                exc_info=not isinstance(exc, ConfigError),
            )
            raise
        swap_runtime(app, runtime)
    app[METRICS].config_reloads.labels("ok").inc()
    if restart_required:
        _log.warning(
            "config_reload_restart_required",
            fields=restart_required,
            kept="the running values until the next restart",
        )
    _log.info("config_reloaded", path=source.path, routes=len(merged.routes), keys=len(merged.keys))
    return Reloaded(len(merged.routes), len(merged.keys), restart_required)


def keep_restart_only(old: GatewayConfig, new: GatewayConfig) -> tuple[GatewayConfig, list[str]]:
    """`new`, with the sections that apply at start only taken from `old`; and the field
    paths that differed. Field names only: values may be secrets (a storage URL)."""
    changed = []
    for section in RESTART_ONLY:
        before, after = getattr(old, section), getattr(new, section)
        changed += [
            f"{section}.{name}"
            for name in type(before).model_fields
            if getattr(before, name) != getattr(after, name)
        ]
    listen = old.admin.listen if old.admin is not None else None
    if listen != (new.admin.listen if new.admin is not None else None):
        changed.append("admin.listen")
    admin = new.admin.model_copy(update={"listen": listen}) if new.admin is not None else None
    kept = {section: getattr(old, section) for section in RESTART_ONLY}
    return new.model_copy(update={**kept, "admin": admin}), changed


def swap_runtime(app: web.Application, runtime: Runtime) -> None:
    """New requests start with `runtime`; metric labels are bounded by it from now on."""
    with warnings.catch_warnings():
        # aiohttp warns when a started app's state changes, since a handler may have kept
        # what it read; requests read RUNTIME once, when they start, which is what we want.
        warnings.simplefilter("ignore", DeprecationWarning)
        app[RUNTIME] = runtime
    app[METRICS].follow(runtime)

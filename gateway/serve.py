"""Running the gateway: the event loop, the listening socket, start-up messages."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import structlog
from aiohttp import web

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.logs import configure_logging

KEY_PREFIX = "gk-"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (measurably faster for a proxy), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def runner_for(app: web.Application) -> web.AppRunner:
    # handler_cancellation: a client that goes away cancels its request, and so the upstream call.
    return web.AppRunner(app, access_log=None, handler_cancellation=True)


def serve(config: GatewayConfig, host: str, port: int) -> None:
    configure_logging(config.logging)
    log = structlog.get_logger("gateway")
    app = create_app(config)

    async def announce(_: web.Application) -> None:
        log.info("listening", url=f"http://{host}:{port}", routes=len(config.routes))

    app.on_startup.append(announce)
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        handler_cancellation=True,
        print=None,
        loop=new_event_loop(),
    )


def new_key() -> tuple[str, str]:
    """A random gateway key and its sha256 (hex), which is all the config stores."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()

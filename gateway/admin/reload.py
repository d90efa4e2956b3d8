"""POST /admin/reload: re-read the config file now, as SIGHUP does, and say how it went."""

from __future__ import annotations

import os
import signal

from aiohttp import web

from gateway.config import ConfigError
from gateway.errors import BadRequest
from gateway.reload import CONFIG_SOURCE, reload_config


async def reload(request: web.Request) -> web.Response:
    """200 with what is now served; 400 `invalid_config` (the running config stays)."""
    try:
        done = await reload_config(request.app)
    except ConfigError as exc:
        raise BadRequest(
            f"The config was not reloaded: {exc}. The running config stays.",
            code="invalid_config",
        ) from None
    source = request.app[CONFIG_SOURCE]
    if source.supervised:  # one worker got the request: its supervisor tells them all
        os.kill(os.getppid(), signal.SIGHUP)
    return web.json_response(
        {
            "status": "reloaded",
            "routes": done.routes,
            "keys": done.keys,
            "restart_required": done.restart_required,
        }
    )

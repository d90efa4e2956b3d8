"""Admin authentication: the admin token (constant-time), never a gateway key."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.errors import Forbidden, Unauthorized
from gateway.routes import RUNTIME
from gateway.stages.auth import presented_key

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_only(handler: Handler) -> Handler:
    """Wrap an admin handler: 401 without the admin token, 403 for a gateway key."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        check_admin(request)
        return await handler(request)

    return guarded


def check_admin(request: web.Request) -> None:
    runtime = request.app[RUNTIME]
    admin = runtime.config.admin
    secret = presented_key(request)
    if secret is None:
        raise Unauthorized(
            "The admin API needs the admin token as 'Authorization: Bearer <token>'."
        )
    digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
    # SECURITY: constant-time comparison; with no admin token configured nothing matches.
    expected = admin.token_sha256 if admin is not None else "0" * 64
    if hmac.compare_digest(digest, expected) and admin is not None:
        return
    if runtime.find_key(secret) is not None:
        raise Forbidden("A gateway key cannot use the admin API.", code="admin_only")
    raise Unauthorized("Unknown admin token.")

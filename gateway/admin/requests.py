"""GET /admin/requests: the most recent requests of every replica, newest first."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import BadRequest, Unavailable
from gateway.requestlog import REQUEST_LOG, RequestLogUnavailable, valid_status_filter

DEFAULT_LIMIT = 50


async def recent_requests(request: web.Request) -> web.Response:
    """`?limit=50` (1 to the log size), `key=<key name>`, `status=429|5xx|error`."""
    log = request.app[REQUEST_LOG]
    query = request.query
    limit = _limit(query.get("limit", ""), log.size)
    key = query.get("key") or None
    status = query.get("status") or None
    if status is not None and not valid_status_filter(status):
        raise BadRequest("status must be a code (429), a class (5xx) or 'error'.", param="status")
    try:
        rows = await log.recent(limit, key=key, status=status)
    except RequestLogUnavailable as exc:
        raise Unavailable(
            f"The store is unreachable ({exc}); the request log cannot be read.",
            code="store_unavailable",
        ) from None
    return web.json_response({"requests": rows, "limit": limit, "size": log.size})


def _limit(raw: str, most: int) -> int:
    if not raw:
        return min(DEFAULT_LIMIT, most)
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= most:
        raise BadRequest(f"limit must be a whole number from 1 to {most}.", param="limit")
    return int(raw)

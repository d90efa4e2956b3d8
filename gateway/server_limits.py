"""HTTP hygiene at the server: parser limits, slow-client deadlines, quiet malformed requests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from gateway.config import ServerConfig

# Whatever still runs after the drain (never a proxied request: those are drained) gets this.
SHUTDOWN_TIMEOUT_S = 2.0


def server_options(server: ServerConfig) -> dict[str, Any]:
    """AppRunner keyword arguments. SECURITY: the parser limits are set explicitly (a longer
    request line or header field, or more headers, get 400 before any handler runs), and
    kept-alive connections close after `keepalive_timeout_s` without a complete request."""
    return {
        "access_log": None,
        # A client that goes away cancels its request, and so the upstream call.
        "handler_cancellation": True,
        "shutdown_timeout": SHUTDOWN_TIMEOUT_S,
        "keepalive_timeout": server.keepalive_timeout_s,
        "max_line_size": server.max_line_bytes,
        "max_field_size": server.max_header_bytes,
        "max_headers": server.max_headers,
    }


class HeaderDeadline:
    """Closes connections that have not delivered a whole request within `timeout_s` of
    opening (slowloris: headers trickled a byte at a time keep a connection forever).

    aiohttp's keep-alive timer bounds later requests on a connection; this bounds the first,
    with a deadline shorter than the keep-alive time that load balancers need.
    """

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._opened: dict[RequestHandler, float] = {}

    def sweep(self, connections: list[RequestHandler]) -> int:
        """Close the connections past the deadline; returns how many."""
        now, closed = self._clock(), 0
        seen: dict[RequestHandler, float] = {}
        for conn in connections:
            # aiohttp counts the requests whose headers it has parsed on each connection.
            if getattr(conn, "_request_count", 1) > 0:
                continue
            opened = seen[conn] = self._opened.get(conn, now)
            if now - opened >= self.timeout_s:
                conn.force_close()
                closed += 1
        self._opened = seen  # forget connections that are gone or have sent a request
        return closed

    async def run(self, server: web.Server, on_close: Callable[[int], None]) -> None:
        """Sweep for as long as the server runs, a few times per deadline."""
        tick = min(1.0, self.timeout_s / 4)
        while True:
            await asyncio.sleep(tick)
            closed = self.sweep(server.connections)
            if closed:
                on_close(closed)


class QuietMalformedRequests(logging.Filter):
    """aiohttp logs a malformed request (bad header, broken gzip) at ERROR with a traceback
    that quotes the offending bytes. SECURITY: those bytes may hold a client's key, and the
    client was told (400); the log keeps one line without them."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            record.msg, record.args = "malformed request refused: %s", (type(exc).__name__,)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_malformed_requests() -> None:
    """Install the filter on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietMalformedRequests) for f in logger.filters):
        logger.addFilter(QuietMalformedRequests())

"""HTTP hygiene at the server: parser limits, slow-client deadlines, quiet malformed requests."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from gateway.config import ServerConfig
from gateway.errors import BadRequest, GatewayError, InternalError
from gateway.middleware import SERVER, render_error
from gateway.stages.body import unsupported_encoding

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

    async def run(self, server: web.Server, on_close: Callable[[int], None] | None) -> None:
        """Sweep for as long as the server runs, a few times per deadline."""
        tick = min(1.0, self.timeout_s / 4)
        while True:
            await asyncio.sleep(tick)
            closed = self.sweep(server.connections)
            if closed and on_close is not None:
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


class GatewayRunner(web.AppRunner):
    """An AppRunner with the server's protections, whatever serves through it (`gateway
    serve`, `gateway demo`): the parser limits and keep-alive time of `server_options`,
    connections that answer in the gateway's own way even where no handler runs (see
    `_Connection`), and the header deadline, swept from setup to cleanup. `on_slow_close` is
    told how many connections each sweep closed."""

    def __init__(
        self,
        app: web.Application,
        server: ServerConfig,
        on_slow_close: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(app, **server_options(server))
        self._deadline = HeaderDeadline(server.header_timeout_s)
        self._on_slow_close = on_slow_close
        self._sweeps: asyncio.Task[None] | None = None

    async def setup(self) -> None:
        await super().setup()
        assert self.server is not None
        sweeps = self._deadline.run(self.server, self._on_slow_close)
        self._sweeps = asyncio.get_running_loop().create_task(sweeps)

    async def cleanup(self) -> None:
        if self._sweeps is not None:
            self._sweeps.cancel()
        await super().cleanup()

    async def _make_server(self) -> web.Server:
        # aiohttp has no setting for the class of its connections: the server it built (with
        # the app's handler, request factory and options) is given a subclass that adds none.
        server = await super()._make_server()
        server.__class__ = _Server
        return server


class _Server(web.Server):
    __slots__ = ()

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)


class _Connection(RequestHandler):
    """aiohttp answers a request it cannot parse (a request line or header over the limits,
    too many headers, a body encoding it cannot decode) by itself, before any handler, in
    plain text that quotes what it could not parse. SECURITY: those bytes may hold the
    client's key. The client gets the gateway's JSON error instead, with a request id, and
    the connection is closed, as aiohttp does."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if bytes were sent
        response = render_error(request, parse_error(status, exc))  # type: ignore[arg-type]
        # No handler ran, nor the app's response hooks: their headers are set here.
        response.headers["Server"] = SERVER
        response.headers["x-request-id"] = os.urandom(16).hex()
        response.force_close()
        return response


def parse_error(status: int, exc: BaseException | None) -> GatewayError:
    """What a request aiohttp refused is told, without a byte of the request."""
    if isinstance(exc, ContentEncodingError):
        return unsupported_encoding()
    if isinstance(exc, LineTooLong):
        return BadRequest(
            "The request line or a header field is longer than this gateway accepts.",
            code="request_too_long",
        )
    if status >= 500 or not isinstance(exc, HttpProcessingError):
        return InternalError("The gateway failed unexpectedly.")
    error = BadRequest(
        "The request is not valid HTTP, or has more headers than this gateway accepts.",
        code="malformed_request",
    )
    error.status = exc.code if 400 <= exc.code < 500 else 400
    return error

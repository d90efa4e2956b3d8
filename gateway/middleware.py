"""The edge: gives every request an id, and renders every error in the client's dialect."""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping

import structlog
from aiohttp import HttpVersion11, web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import _default_expect_handler

from gateway.context import RequestContext
from gateway.dialects import dialect_for
from gateway.drain import ANSWERED_WHILE_DRAINING, DRAIN, shutting_down
from gateway.errors import BadRequest, GatewayError, InternalError, NotFound
from gateway.sites import SITES

REQUEST_ID = web.RequestKey("request_id", str)
# An id no other request has, for the gateway's own records (a budget reservation): the one
# shown may be the client's, which it may send on several requests at once.
UNIQUE_ID = web.RequestKey("unique_id", str)
CONTEXT: web.RequestKey[RequestContext] = web.RequestKey("context")
# SECURITY: the Server header names no framework or Python version, for fingerprinting.
SERVER = "llm-gateway"
# SECURITY: TRACE has the server echo the request it received: sent on to a provider, the
# echo would hold the provider's key. CONNECT asks for a tunnel.
_NEVER_FORWARDED = frozenset({"TRACE", "CONNECT"})
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_log = structlog.get_logger("gateway.edge")


def request_ids(request: web.Request) -> tuple[str, str]:
    """(the id shown, the unique id): a well-formed client-sent `x-request-id` is kept and
    shown (for tracing), with an id of the gateway's own as the unique one; else one new id
    is both."""
    unique = os.urandom(16).hex()
    sent = request.headers.get("x-request-id")
    return (sent if sent is not None and _CLIENT_ID.match(sent) else unique), unique


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID], request[UNIQUE_ID] = request_ids(request)
    app = request.app
    try:
        if not app[SITES].serves(request):
            # SECURITY: with its own address, the admin API does not exist on the public one.
            raise NotFound(f"No such endpoint: {request.method} {request.path}.")
        if request.method in _NEVER_FORWARDED:
            raise _method_not_allowed(request.method)
        path = request.path
        if ("/." in path or "\\" in path) and _dot_segments(path):
            raise BadRequest(
                f"The path {path!r} has a '.' or '..' segment; send the path itself.",
                code="invalid_path",
            )
        drain = app[DRAIN]
        if drain.draining and request.path not in ANSWERED_WHILE_DRAINING:
            raise shutting_down()
        task = drain.enter(request)
        try:
            response = await handler(request)
        finally:
            drain.leave(task)
    except GatewayError as err:
        response = _refuse(request, err)
    except web.HTTPException as exc:
        if exc.status < 400:
            stamp_headers(request, exc.headers)
            raise
        response = _refuse(request, _from_http(request, exc))
    except Exception:  # the one broad catch: an unknown failure is a 500 with no detail
        _log.exception("unhandled", request_id=request[REQUEST_ID], path=request.path)
        response = render_error(request, InternalError("The gateway failed unexpectedly."))
    if not response.prepared:  # a stream was stamped as it started (see `stamp_headers`)
        stamp_headers(request, response.headers, response)
    return response


def _refuse(request: web.Request, err: GatewayError) -> web.Response:
    """A request the proxy took writes its own request line, with its outcome. One refused
    before it (an unknown path, a path with a dot segment, a method never served, the admin
    API's refusals) gets this line, for an operator watching what is tried."""
    if CONTEXT not in request:
        _log.info(
            "refused",
            request_id=request[REQUEST_ID],
            method=request.method,
            path=request.path,
            status=err.status,
            error_code=err.code,
        )
    return render_error(request, err)


def _method_not_allowed(method: str) -> GatewayError:
    err = GatewayError(
        f"The method {method} is not served.",
        code="method_not_allowed",
        headers={"Allow": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"},
    )
    err.status, err.error_type = 405, "invalid_request_error"
    return err


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` answered as aiohttp answers it. Any other expectation, which
    aiohttp refuses in plain text quoting it, before any middleware runs, is refused here with
    417 in the client's dialect, and logged as any refusal before a handler is."""
    expected = request.headers.get("Expect", "")
    if request.version != HttpVersion11 or expected.lower() == "100-continue":
        await _default_expect_handler(request)
        return None
    request[REQUEST_ID], request[UNIQUE_ID] = request_ids(request)
    err = GatewayError(
        "The Expect header may only ask for 100-continue.", code="expectation_failed"
    )
    err.status, err.error_type = 417, "invalid_request_error"
    response = _refuse(request, err)
    stamp_headers(request, response.headers, response)
    return response


def _dot_segments(path: str) -> bool:
    """SECURITY: a `.` or `..` segment, sent as such or percent-encoded, is resolved on the
    way upstream (or by the provider's server, which may split at backslashes too), to a
    path other than the one routed, authorised and billed (up to the provider's own paths
    outside its API, with the provider's key)."""
    segments = path.replace("\\", "/").split("/")  # some servers take `\` for `/`
    return any(segment in (".", "..") for segment in segments)


def _from_http(request: web.Request, exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return NotFound(f"No such endpoint: {request.method} {request.path}.")
    err = GatewayError(f"{exc.reason}: {request.method} {request.path}.")
    err.status = exc.status
    err.error_type = "invalid_request_error"
    err.code = exc.reason.lower().replace(" ", "_")
    return err


def render_error(request: web.Request, err: GatewayError) -> web.Response:
    dialect = dialect_for(request)
    headers = {**err.headers, "x-should-retry": "true" if err.should_retry else "false"}
    return web.Response(
        status=err.status,
        body=dialect.error_body(err),
        content_type="application/json",
        headers=headers,
    )


def stamp_headers(
    request: web.Request,
    headers: MutableMapping[str, str],
    response: web.StreamResponse | None = None,
) -> None:
    """The gateway's headers, on every response it sends: the edge middleware stamps what a
    handler returns, and a handler that starts a stream itself stamps it before it starts.
    (Not in aiohttp's on_response_prepare signal: its dispatch, on every request, cost more
    than the stamping.)"""
    headers["Server"] = SERVER
    if request.app[DRAIN].draining and response is not None:
        # A draining process takes no further request on this connection, and says so.
        response.force_close()
        headers["Connection"] = "close"
    # Taken off the request: the context refers to the request, and the two referring to each
    # other would leave every request's objects to the cycle collector.
    ctx = request.pop(CONTEXT, None)
    if ctx is not None:
        headers.update(ctx.response_headers)
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        headers["x-request-id"] = request_id

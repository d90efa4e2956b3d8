"""The mock provider app: record each request, check its key, apply its step, answer it."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from gateway.mock import control
from gateway.mock.endpoints import ENDPOINTS, Endpoint, Exchange, Reply
from gateway.mock.faults import (
    JSON,
    Dialect,
    MockError,
    cached_tokens,
    error_response,
    fault_response,
    step_from_headers,
)
from gateway.mock.state import MOCK_STATE, MockState, RecordedRequest, ScriptStep
from gateway.mock.streaming import send_events, truncate

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = 64 * 1024 * 1024  # long prompts in benchmarks exceed aiohttp's 1 MiB default
BACKLOG = 1024


async def _record(request: web.Request) -> RecordedRequest:
    recorded = RecordedRequest(
        method=request.method,
        path=request.path,
        query=request.query_string,
        headers={name.lower(): value for name, value in request.headers.items()},
        body=await request.read(),
    )
    request.app[MOCK_STATE].record(recorded)
    return recorded


def _authorized(headers: Mapping[str, str], api_key: str | None) -> bool:
    """Either provider's way of sending the key is accepted on every path."""
    if api_key is None:
        return True
    bearer = headers.get("authorization", "").removeprefix("Bearer ")
    x_api_key = headers.get("x-api-key", "")
    # SECURITY: constant-time comparisons, as a real provider would do.
    return secrets.compare_digest(bearer, api_key) or secrets.compare_digest(x_api_key, api_key)


def _parse(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MockError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(data, dict):
        raise MockError(400, "The request body must be a JSON object.")
    return data


async def _send(request: web.Request, reply: Reply, step: ScriptStep) -> web.StreamResponse:
    if isinstance(reply, list):
        events = truncate(reply) if step.malformed else reply
        return await send_events(request, events, step, step.headers)
    body = reply[: len(reply) // 2] if step.malformed else reply
    if step.cut_after is not None:
        return await _send_cut(request, body, step)
    return web.Response(status=step.status, body=body, content_type=JSON, headers=step.headers)


async def _send_cut(request: web.Request, body: bytes, step: ScriptStep) -> web.StreamResponse:
    """A whole answer announced, but the connection breaks after `cut_after` bytes of it."""
    response = web.StreamResponse(status=step.status, headers=step.headers)
    response.content_type, response.content_length = JSON, len(body)
    await response.prepare(request)
    await response.write(body[: max(1, step.cut_after or 0)])  # the status line goes out
    response.force_close()
    if request.transport is not None:
        request.transport.abort()
    return response


async def _answer(
    request: web.Request, endpoint: Endpoint, recorded: RecordedRequest, dialect: Dialect
) -> web.StreamResponse:
    """Parse, choose the step (script for the model, script for any, headers), then answer."""
    state = request.app[MOCK_STATE]
    body = _parse(recorded.body) if endpoint.method == "POST" else {}
    model = body.get("model")
    step = state.pop_step(model if isinstance(model, str) else "") if endpoint.scripted else None
    if step is None:
        step = step_from_headers(recorded.headers)
    if step.latency_s > 0:
        await asyncio.sleep(step.latency_s)
    fault = fault_response(dialect, step, recorded.headers)
    if fault is not None:
        return fault
    cached = cached_tokens(step, recorded.headers)
    exchange = Exchange(state, body, step, cached, dict(request.match_info), dialect)
    return await _send(request, endpoint.answer(exchange), step)


def _handler(endpoint: Endpoint, api_key: str | None) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        recorded = await _record(request)  # before any fault, so tests can count attempts
        dialect = endpoint.dialect_for(recorded.headers)
        if not _authorized(recorded.headers, api_key):
            return _unauthorized(dialect)
        try:
            return await _answer(request, endpoint, recorded, dialect)
        except MockError as error:
            return error_response(dialect, error.status, error.message, error.code)

    return handle


def _unauthorized(dialect: Dialect) -> web.Response:
    if dialect == "anthropic":
        return error_response(dialect, 401, "invalid x-api-key")
    return error_response(dialect, 401, "Incorrect API key provided.", "invalid_api_key")


async def _unknown_url(request: web.Request) -> web.StreamResponse:
    await _record(request)
    message = f"Invalid URL ({request.method} {request.path})"
    return error_response("openai", 404, message, "unknown_url")


def create_mock_app(api_key: str | None = None) -> web.Application:
    """A fresh mock provider; with `api_key`, every provider request must carry that key."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[MOCK_STATE] = MockState()
    control.add_routes(app)  # never recorded, never needs the key
    for endpoint in ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.path, _handler(endpoint, api_key))
    app.router.add_route("*", "/{tail:.*}", _unknown_url)  # last: anything else is a 404
    return app


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run_mock(host: str, port: int, api_key: str | None = None) -> None:
    """Serve the mock until interrupted; no access log, so it is never a benchmark's bottleneck."""
    web.run_app(
        create_mock_app(api_key),
        host=host,
        port=port,
        access_log=None,
        backlog=BACKLOG,
        loop=_new_loop(),
    )

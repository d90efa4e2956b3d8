"""Turns what a provider answered into the client's response: buffered, streamed, or an error."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import structlog
from aiohttp import web
from multidict import CIMultiDict

from gateway.attempts import Answer, ProviderError
from gateway.circuit import Permit
from gateway.context import RequestContext, Usage
from gateway.drain import PREPARED
from gateway.errors import DeadlineExceeded, GatewayError, UpstreamFailed
from gateway.headers import downstream_headers
from gateway.json_mode import anomalies
from gateway.middleware import stamp_headers
from gateway.resilience import RESILIENCE
from gateway.sse import WholeEvents

_log = structlog.get_logger("gateway.upstream")


def provider_error_response(ctx: RequestContext, error: ProviderError) -> web.Response:
    """The provider's own error, passed through after the gateway's retries."""
    ctx.status, ctx.outcome = error.status, "provider_error"
    headers = CIMultiDict(error.headers)
    headers["x-should-retry"] = "false"  # the gateway has done the retrying already
    return web.Response(body=error.body, status=error.status, headers=headers)


def buffered_response(ctx: RequestContext, answer: Answer) -> web.Response:
    """A whole answer; a 200 JSON one is read for usage and anomalies and kept for the cache."""
    upstream, body = answer.upstream, answer.body or b""
    ctx.ttfb_s = ctx.elapsed_s()
    ctx.status = upstream.status
    if upstream.status == 200 and upstream.content_type == "application/json":
        _read_answer(ctx, answer, body)
        ctx.response_body = body
    return web.Response(
        body=body, status=upstream.status, headers=downstream_headers(upstream.headers)
    )


def _read_answer(ctx: RequestContext, answer: Answer, body: bytes) -> None:
    """Usage and output anomalies, from one parse of the answer."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        ctx.outcome = "malformed_answer"
        return
    ctx.response_parsed = parsed
    ctx.usage = _sum(answer.earlier_usage, answer.target.provider.usage_from_body(parsed))
    for name in anomalies(ctx.request.path, ctx.payload, parsed):
        add_anomaly(ctx, name)


def add_anomaly(ctx: RequestContext, name: str) -> None:
    if name not in ctx.anomalies:
        ctx.anomalies.append(name)


def _sum(a: Usage | None, b: Usage | None) -> Usage | None:
    if a is None or b is None:
        return b or a
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
    )


async def relay_stream(
    ctx: RequestContext, upstream: aiohttp.ClientResponse, first: bytes
) -> web.StreamResponse:
    """Forward events as they arrive, reading usage on the way. Once the first byte is sent,
    a failure can only end the stream with an error event in the client's dialect.

    Only whole events are sent (see `WholeEvents`: every answer relayed here is an event
    stream), so that error event, or the drain's, never lands inside one the client has
    half of; the usage reader and the cache's capture see the reads as they came."""
    route, provider = ctx.target()
    try:
        response = web.StreamResponse(
            status=upstream.status, headers=downstream_headers(upstream.headers)
        )
        stamp_headers(ctx.request, response.headers, response)
        ctx.request[PREPARED] = response  # a drain that cuts the stream ends it through this
        await response.prepare(ctx.request)
    except BaseException:
        upstream.close()
        raise
    ctx.status = upstream.status
    ctx.ttfb_s = ctx.elapsed_s()
    reader = provider.stream_usage_reader()
    idle = route.idle_timeout_s
    frames = WholeEvents()
    chunk = first
    try:
        async with asyncio.timeout(None) as guard:
            silence = _Silence(guard, idle)
            try:
                while chunk:
                    reader.feed(chunk)
                    if ctx.capture_stream:
                        ctx.captured.append(chunk)
                    events = frames.take(chunk)
                    if events:
                        if ctx.stream_filter is not None:
                            events = ctx.stream_filter(ctx, events)
                        if events:
                            await response.write(events)
                            if first:  # once the first byte is out, other streams' go next
                                first = b""
                                await asyncio.sleep(0)
                    silence.since = silence.loop.time()
                    chunk = await upstream.content.readany()
                    silence.since = None
                await _write_rest(ctx, response, frames.rest())
            finally:
                silence.stop()
    except ConnectionResetError:
        ctx.outcome = "client_disconnected"
        upstream.close()  # the provider sees the disconnect too
        return response
    except (TimeoutError, aiohttp.ClientError) as exc:
        await _end_with_error(ctx, response, upstream, exc, idle)
        return response
    except BaseException:
        upstream.close()
        raise
    finally:
        ctx.usage, ctx.usage_final = reader.usage, reader.final
        ctx.stream_events = frames.events  # the events the client got whole
    upstream.release()
    # The end of the stream is written once the handler returns (aiohttp writes it), after the
    # bill is settled: as with a buffered answer, a client's next request finds this one
    # settled, and does not wait behind its settlement on a kept-alive connection.
    return response


async def _write_rest(ctx: RequestContext, response: web.StreamResponse, rest: bytes) -> None:
    """At the stream's normal end, what followed its last blank line (usually nothing; a last
    event without one) goes out as the provider sent it. On a failure it is dropped instead:
    the error event then follows whole events."""
    if rest and ctx.stream_filter is not None:
        rest = ctx.stream_filter(ctx, rest)
    if rest:
        await response.write(rest)


class _Silence:
    """A stream's idle deadline: `guard` expires once a read has waited `idle` seconds for
    the provider. One timer, moved on only when it fires, where a timeout around each read
    made and cancelled one per chunk (a long answer arrives in thousands of them)."""

    __slots__ = ("_guard", "_handle", "_idle", "loop", "since")

    def __init__(self, guard: asyncio.Timeout, idle: float) -> None:
        self._guard, self._idle = guard, idle
        self.loop = asyncio.get_running_loop()
        self.since: float | None = None  # when the read under way began; None between reads
        self._handle = self.loop.call_at(self.loop.time() + idle, self._check)

    def _check(self) -> None:
        now, since = self.loop.time(), self.since
        # A timer may fire up to a millisecond early: what is left of the wait is rounding.
        if since is not None and now - since >= self._idle - 0.001:
            self._guard.reschedule(now)  # the read is cancelled; the guard raises TimeoutError
            return
        start = now if since is None else since
        self._handle = self.loop.call_at(start + self._idle, self._check)

    def stop(self) -> None:
        self._handle.cancel()


async def _end_with_error(
    ctx: RequestContext,
    response: web.StreamResponse,
    upstream: aiohttp.ClientResponse,
    exc: BaseException,
    idle: float,
) -> None:
    upstream.close()
    ctx.outcome = "stream_interrupted"
    _count_interruption(ctx)
    if isinstance(exc, TimeoutError):
        err: GatewayError = DeadlineExceeded(f"The provider stream was silent for {idle:g}s.")
    else:
        err = UpstreamFailed("The provider stream broke off before it was complete.")
    ctx.error_code = err.code
    try:
        await response.write(ctx.dialect.stream_error_event(err))
    except ConnectionResetError:
        ctx.outcome = "client_disconnected"


def _count_interruption(ctx: RequestContext) -> None:
    """A stream that breaks is not retried, but it is counted, logged, and held against the
    target's circuit like any other failure."""
    route, provider = ctx.target()
    res = ctx.app[RESILIENCE]
    res.stats.stream_interruptions[provider.name] += 1
    circuit = res.circuits.get(
        provider.name, ctx.upstream_model or "", route.circuit, ctx.runtime.generation
    )
    circuit.record(Permit.NORMAL, ok=False)
    _log.warning(
        "stream_interrupted",
        request_id=ctx.request_id,
        target=f"{provider.name}/{ctx.upstream_model}",
    )

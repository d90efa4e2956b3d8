"""The terminal stage: one call to the route's provider, buffered or streamed through."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from aiohttp import web

from gateway.context import RequestContext
from gateway.errors import DeadlineExceeded, GatewayError, UpstreamFailed
from gateway.headers import downstream_headers, upstream_headers
from gateway.pipeline import Next
from gateway.providers import Provider

HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)


async def call_upstream(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
    route, provider = ctx.target()
    session = ctx.request.app[HTTP_SESSION]
    ctx.attempts += 1
    ctx.response_headers["x-gateway-attempts"] = str(ctx.attempts)
    try:
        async with asyncio.timeout(route.timeout_s) as deadline:
            async with session.request(
                ctx.request.method,
                _url(ctx, provider),
                data=ctx.upstream_body or None,
                headers=upstream_headers(
                    ctx.request.headers, provider.headers, provider.default_headers
                ),
                allow_redirects=False,  # SECURITY: a provider may not send us elsewhere.
            ) as upstream:
                _refuse_redirect(upstream, provider)
                if _is_stream(upstream):
                    first = await upstream.content.readany()
                    deadline.reschedule(None)  # from here on, the idle timeout governs
                    return await relay_stream(ctx, upstream, first)
                return await _buffered(ctx, upstream, provider)
    except TimeoutError:
        raise DeadlineExceeded(
            f"The provider did not answer within {route.timeout_s:g}s "
            f"(route '{route.name}' timeout_s)."
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamFailed(
            f"The gateway could not reach provider '{provider.name}' ({type(exc).__name__})."
        ) from None


def _url(ctx: RequestContext, provider: Provider) -> str:
    url = provider.url(ctx.request.path)
    query = ctx.request.query_string
    return f"{url}?{query}" if query else url


def _refuse_redirect(upstream: aiohttp.ClientResponse, provider: Provider) -> None:
    if 300 <= upstream.status < 400:
        raise UpstreamFailed(
            f"Provider '{provider.name}' answered with a redirect ({upstream.status}); "
            "the gateway does not follow redirects."
        )


def _is_stream(upstream: aiohttp.ClientResponse) -> bool:
    return upstream.status == 200 and upstream.content_type == "text/event-stream"


async def _buffered(
    ctx: RequestContext, upstream: aiohttp.ClientResponse, provider: Provider
) -> web.Response:
    body = await upstream.read()
    ctx.ttfb_s = ctx.elapsed_s()
    ctx.status = upstream.status
    if upstream.status == 200 and upstream.content_type == "application/json":
        try:
            ctx.usage = provider.usage_from_body(orjson.loads(body))
        except orjson.JSONDecodeError:
            ctx.outcome = "malformed_answer"
        ctx.response_body = body
    elif upstream.status >= 400:
        ctx.outcome = "provider_error"
        body = provider.redact(body)
    return web.Response(
        body=body, status=upstream.status, headers=downstream_headers(upstream.headers)
    )


async def relay_stream(
    ctx: RequestContext, upstream: aiohttp.ClientResponse, first: bytes
) -> web.StreamResponse:
    """Forward chunks as they arrive, reading usage on the way. Once the first byte is sent,
    a failure can only end the stream with an error event in the client's dialect."""
    route, provider = ctx.target()
    response = web.StreamResponse(
        status=upstream.status, headers=downstream_headers(upstream.headers)
    )
    await response.prepare(ctx.request)
    ctx.status = upstream.status
    ctx.ttfb_s = ctx.elapsed_s()
    reader = provider.stream_usage_reader()
    idle = route.idle_timeout_s
    chunk = first
    try:
        while chunk:
            reader.feed(chunk)
            if ctx.capture_stream:
                ctx.captured.append(chunk)
            if ctx.stream_filter is not None:
                chunk = ctx.stream_filter(chunk)
            if chunk:
                await response.write(chunk)
            async with asyncio.timeout(idle):
                chunk = await upstream.content.readany()
    except ConnectionResetError:
        ctx.outcome = "client_disconnected"
        upstream.close()  # the provider sees the disconnect too
        return response
    except (TimeoutError, aiohttp.ClientError) as exc:
        await _end_with_error(ctx, response, upstream, exc, idle)
        return response
    finally:
        ctx.usage = reader.usage
    await response.write_eof()
    return response


async def _end_with_error(
    ctx: RequestContext,
    response: web.StreamResponse,
    upstream: aiohttp.ClientResponse,
    exc: BaseException,
    idle: float,
) -> None:
    upstream.close()
    ctx.outcome = "stream_interrupted"
    if isinstance(exc, TimeoutError):
        err: GatewayError = DeadlineExceeded(f"The provider stream was silent for {idle:g}s.")
    else:
        err = UpstreamFailed("The provider stream broke off before it was complete.")
    ctx.error_code = err.code
    try:
        await response.write(ctx.dialect.stream_error_event(err))
        await response.write_eof()
    except ConnectionResetError:
        ctx.outcome = "client_disconnected"

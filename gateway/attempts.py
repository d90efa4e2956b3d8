"""One attempt against one target: send the request, read the answer or classify the failure."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.circuit import CircuitBreaker
from gateway.context import RequestContext, Usage
from gateway.deadline import Deadline
from gateway.errors import DeadlineExceeded, GatewayError, Unavailable, UpstreamFailed
from gateway.fallbacks import Target
from gateway.headers import downstream_headers, upstream_headers
from gateway.resilience import Resilience
from gateway.retry import Verdict, retry_after_s, verdict_for_status

HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)

_log = structlog.get_logger("gateway.upstream")


@dataclass(slots=True)
class Answer:
    """A successful attempt: a buffered body, or an open stream whose first chunk is read."""

    target: Target
    upstream: aiohttp.ClientResponse
    first: bytes = b""
    body: bytes | None = None  # None: a stream, still open
    # Usage of an earlier answer this one replaced (a JSON repair): billed all the same.
    earlier_usage: Usage | None = None

    @property
    def streaming(self) -> bool:
        return self.body is None


@dataclass(frozen=True, slots=True)
class ProviderError:
    """A provider's error answer, kept so the last one can be passed through to the client."""

    status: int
    headers: CIMultiDict[str]
    body: bytes


@dataclass(eq=False)
class AttemptFailed(Exception):
    """An attempt that gave no answer. Final: `passthrough` goes to the client if set, else
    `error` is rendered in the client's dialect."""

    target: Target
    verdict: Verdict
    reason: str  # http_<status>, connect_error, timeout, redirect, circuit_open, invalid_json
    error: GatewayError
    passthrough: ProviderError | None = None
    retry_after_s: float | None = None
    # Whether it says the provider is unwell (circuit breaker): 5xx, 408, 429, no connection.
    provider_failed: bool = True
    # Whether the provider may have made (and billed) an answer the gateway never read: a try
    # cut by its timeout, or an answer that broke off on its way.
    maybe_billed: bool = False

    def __str__(self) -> str:
        return f"{self.target.label}: {self.reason}"


async def attempt(
    ctx: RequestContext, res: Resilience, target: Target, deadline: Deadline
) -> Answer:
    """One attempt, guarded by the target's circuit, counted in `ctx.attempts`, logged."""
    route, _ = ctx.target()
    circuit = res.circuits.get(
        target.provider.name, target.model or "", route.circuit, ctx.runtime.generation
    )
    permit = circuit.allow()
    if permit is None:
        raise _circuit_open(target, circuit)
    ctx.attempts += 1
    ctx.response_headers["x-gateway-attempts"] = str(ctx.attempts)
    number, started = ctx.attempts, time.monotonic()
    try:
        answer = await _timed(ctx, res, target)
    except AttemptFailed as failed:
        circuit.record(permit, ok=not failed.provider_failed)
        _count(ctx, res, target, number, started, failed.reason, status=_status(failed))
        if failed.maybe_billed:
            ctx.cut_tries += 1
        raise
    except BaseException:
        ctx.cut_tries += 1  # cancelled or out of time, maybe while the provider worked
        if deadline.remaining_s() > 0:  # a hedge lost or the client left: no verdict
            circuit.release(permit)
            _count(ctx, res, target, number, started, "cancelled")
        elif deadline.by_client:  # a client in a hurry: no verdict on the provider either
            circuit.release(permit)
            _count(ctx, res, target, number, started, "timeout")
        else:
            # A provider that hangs until the route's deadline is failing, even without a
            # per-try timeout to say so.
            circuit.record(permit, ok=False)
            _count(ctx, res, target, number, started, "timeout")
        raise
    circuit.record(permit, ok=True)
    _count(ctx, res, target, number, started, "ok", status=answer.upstream.status)
    return answer


def close_answer(answer: Answer) -> None:
    """Drop an answer that will not be used (a hedge that answered second)."""
    answer.upstream.close()


async def _timed(ctx: RequestContext, res: Resilience, target: Target) -> Answer:
    """The per-try timeout: the whole body of a buffered answer, the first chunk of a stream."""
    route, _ = ctx.target()
    limit = route.retry.per_try_timeout_s
    if ctx.stream and route.retry.ttfb_timeout_s is not None:
        limit = min(limit or route.retry.ttfb_timeout_s, route.retry.ttfb_timeout_s)
    if limit is None:  # no per-try timeout: the request's deadline alone bounds the try
        return await _exchange(ctx, res, target)
    try:
        async with asyncio.timeout(limit):
            return await _exchange(ctx, res, target)
    except TimeoutError:
        message = (
            f"Provider '{target.provider.name}' did not answer within the per-try timeout "
            f"of {limit:g}s (route '{route.name}' retry)."
        )
        error = DeadlineExceeded(message)  # maybe while the provider worked on it
        raise AttemptFailed(target, Verdict.RETRY, "timeout", error, maybe_billed=True) from None


async def _exchange(ctx: RequestContext, res: Resilience, target: Target) -> Answer:
    provider = target.provider
    # As the client sent it, still percent-encoded: an encoded `?`, `#`, `/` or `&` stays
    # part of its segment or value.
    sent = ctx.request.rel_url
    url = provider.url(sent.raw_path)
    if sent.raw_query_string:
        url = f"{url}?{sent.raw_query_string}"
    session = ctx.app[HTTP_SESSION]
    headers = upstream_headers(ctx.request.headers, provider.headers, provider.default_headers)
    try:
        upstream = await session.request(
            ctx.request.method,
            _parsed(url),
            data=target.body or None,
            headers=headers,
            allow_redirects=False,  # SECURITY: a provider may not send us elsewhere.
        )
    except aiohttp.ClientError as exc:
        raise _unreachable(target, exc) from None
    try:
        return await _read(upstream, target, res)
    except AttemptFailed:
        raise
    except aiohttp.ClientError as exc:
        upstream.close()
        if upstream.status < 300:  # it answered: the answer was made, and may be billed
            raise _broke_off(target, exc) from None
        raise _unreachable(target, exc) from None
    except BaseException:
        upstream.close()  # cancelled mid-answer: the provider sees the connection go
        raise


@functools.lru_cache(maxsize=1024)
def _parsed(url: str) -> URL:
    """A request's upstream URL, parsed once: most requests go to a handful of them."""
    return URL(url)


async def _read(upstream: aiohttp.ClientResponse, target: Target, res: Resilience) -> Answer:
    status = upstream.status
    if 300 <= status < 400:
        upstream.release()
        message = (
            f"Provider '{target.provider.name}' answered with a redirect ({status}); "
            "the gateway does not follow redirects."
        )
        raise AttemptFailed(target, Verdict.FINAL, "redirect", UpstreamFailed(message))
    if status >= 400:
        body = await upstream.read()
        upstream.release()
        raise _provider_error(upstream, body, target, res)
    if status == 200 and upstream.content_type == "text/event-stream":
        return Answer(target, upstream, first=await upstream.content.readany())
    body = await upstream.read()
    upstream.release()
    return Answer(target, upstream, body=body)


def _provider_error(
    upstream: aiohttp.ClientResponse, body: bytes, target: Target, res: Resilience
) -> AttemptFailed:
    status, headers = upstream.status, upstream.headers
    passthrough = ProviderError(status, downstream_headers(headers), target.provider.redact(body))
    message = f"Provider '{target.provider.name}' answered {status}."
    error = GatewayError(message)
    error.status = status
    return AttemptFailed(
        target,
        verdict_for_status(status, headers, body),
        f"http_{status}",
        error,
        passthrough=passthrough,
        retry_after_s=retry_after_s(headers, res.wall_clock()),
        provider_failed=status >= 500 or status in (408, 429),
    )


def _unreachable(target: Target, exc: BaseException) -> AttemptFailed:
    message = (
        f"The gateway could not reach provider '{target.provider.name}' ({type(exc).__name__})."
    )
    return AttemptFailed(target, Verdict.RETRY, "connect_error", UpstreamFailed(message))


def _broke_off(target: Target, exc: BaseException) -> AttemptFailed:
    message = (
        f"Provider '{target.provider.name}' answered, but its answer broke off before it was "
        f"complete ({type(exc).__name__})."
    )
    error = UpstreamFailed(message)
    return AttemptFailed(target, Verdict.RETRY, "connect_error", error, maybe_billed=True)


def _circuit_open(target: Target, circuit: CircuitBreaker) -> AttemptFailed:
    """Retry-After is rounded up, so that a client that waits as told finds the cooldown
    over; half-open (the cooldown over, its one probe under way) it is a second."""
    wait = circuit.retry_in_s()
    millis = 1000 if wait is None else max(1, math.ceil(wait * 1000))
    seconds = math.ceil(millis / 1000)
    when = "one request is testing it now" if wait is None else f"it is tried again in {seconds}s"
    message = f"'{target.label}' is failing and its circuit breaker is open; {when}."
    headers = {"Retry-After": str(seconds), "retry-after-ms": str(millis)}
    error = Unavailable(message, code="circuit_open", headers=headers)
    return AttemptFailed(target, Verdict.NEXT_TARGET, "circuit_open", error, provider_failed=False)


def _status(failed: AttemptFailed) -> int | None:
    return failed.passthrough.status if failed.passthrough else None


def _count(
    ctx: RequestContext,
    res: Resilience,
    target: Target,
    number: int,
    started: float,
    outcome: str,
    status: int | None = None,
) -> None:
    res.stats.attempts[(target.provider.name, outcome)] += 1
    # A single clean attempt is already in the request's own log line: a debug line, whose
    # fields are not even gathered unless debug lines are written.
    quiet = outcome == "ok" and number == 1
    if quiet and not _log.is_enabled_for(logging.DEBUG):
        return
    log = _log.debug if quiet else _log.info
    log(
        "upstream_attempt",
        request_id=ctx.request_id,
        attempt=number,
        target=target.label,
        outcome=outcome,
        status=status,
        elapsed_ms=round((time.monotonic() - started) * 1000, 2),
    )

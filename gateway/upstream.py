"""The terminal stage: the route's targets in order, each tried with retries, until one answers."""

from __future__ import annotations

import asyncio
import time

import orjson
import structlog
from aiohttp import web

from gateway.attempts import HTTP_SESSION, Answer, AttemptFailed, attempt, close_answer
from gateway.context import RequestContext
from gateway.deadline import Deadline, request_deadline
from gateway.errors import release
from gateway.fallbacks import Target, request_targets
from gateway.hedging import hedged
from gateway.json_mode import anomalies, wants_json
from gateway.pipeline import Next
from gateway.resilience import RESILIENCE, Resilience
from gateway.respond import add_anomaly, buffered_response, provider_error_response, relay_stream
from gateway.retry import RETRIABLE_STATUSES, Verdict
from gateway.retrying import TargetRetries, Try
from gateway.stages.gates import passed

__all__ = ["HTTP_SESSION", "call_upstream", "relay_stream"]

_log = structlog.get_logger("gateway.upstream")


async def call_upstream(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
    """Retries and fallbacks happen only before the first byte reaches the client; an error
    returned after them carries `x-should-retry: false`, so SDKs do not multiply attempts."""
    await passed(ctx)  # the limits' verdict: nothing goes upstream before it
    ctx.upstream_started = time.perf_counter()
    route, _ = ctx.target()
    res = ctx.app[RESILIENCE]
    deadline = request_deadline(route, ctx.request.headers, ctx.elapsed_s())
    ctx.response_headers["x-gateway-attempts"] = str(ctx.attempts)
    try:
        if deadline.remaining_s() <= 0:
            raise TimeoutError
        async with asyncio.timeout(deadline.remaining_s()):
            answer = await _first_answer(ctx, res, deadline)
    except AttemptFailed as failed:
        try:
            return await _give_up(ctx, res, failed)
        finally:
            release(failed)  # the failed tries' state, which refers to itself
    except TimeoutError:
        return await _give_up_late(ctx, res, deadline)
    answer = await _json_repaired(ctx, res, answer, deadline)
    _answered_by(ctx, answer.target)
    if answer.streaming:
        return await relay_stream(ctx, answer.upstream, answer.first)
    return buffered_response(ctx, answer)


async def _first_answer(ctx: RequestContext, res: Resilience, deadline: Deadline) -> Answer:
    """Each target in turn until one answers; a FINAL failure (a request the provider
    refuses as such) ends the search at once."""
    route, _ = ctx.target()
    targets = request_targets(ctx, res.stats)
    last: AttemptFailed | None = None
    for index, target in enumerate(targets):
        if last is not None:
            _note_fallback(ctx, res, last, target)
        first_try = None
        if index == 0 and route.hedge_after_s is not None:
            first_try = _hedged_try(ctx, res, targets, deadline, route.hedge_after_s)
        try:
            answer = await TargetRetries(ctx, res, target, deadline, first_try).run()
        except AttemptFailed as failed:
            if failed.verdict is Verdict.FINAL:
                raise
            if failed.reason == "circuit_open":
                res.stats.targets_skipped[(route.name, target.provider.name, "circuit_open")] += 1
            # A skipped target says less about what went wrong than a real failure.
            if last is None or failed.reason != "circuit_open":
                last = failed
            continue
        return answer
    if last is None:  # request_targets always returns the primary
        raise RuntimeError("no upstream target")
    raise last


def _note_fallback(
    ctx: RequestContext, res: Resilience, previous: AttemptFailed, target: Target
) -> None:
    route, _ = ctx.target()
    res.stats.fallbacks[(route.name, target.provider.name)] += 1
    _log.info(
        "fallback",
        request_id=ctx.request_id,
        route=route.name,
        from_target=previous.target.label,
        to_target=target.label,
        after=previous.reason,
    )


def _hedged_try(
    ctx: RequestContext, res: Resilience, targets: list[Target], deadline: Deadline, after: float
) -> Try:
    """The primary's first try, with a hedge on the next target (the primary itself when the
    route has no usable fallback) if it has not answered within `after` seconds."""
    route, _ = ctx.target()
    primary, backup = targets[0], targets[1] if len(targets) > 1 else targets[0]
    started = False

    def on_hedge() -> None:
        nonlocal started
        started = True
        res.stats.hedges[(route.name, "started")] += 1
        _log.info("hedge", request_id=ctx.request_id, target=backup.label, after_s=after)

    async def run() -> Answer:
        answer, index = await hedged(
            lambda: attempt(ctx, res, primary, deadline),
            lambda: attempt(ctx, res, backup, deadline),
            after,
            on_hedge,
            lambda late: _drop_late_answer(ctx, late),
        )
        if started:
            res.stats.hedges[(route.name, "won" if index else "lost")] += 1
        return answer

    return run


def _drop_late_answer(ctx: RequestContext, answer: Answer) -> None:
    """A hedge that answered too, second: billed by the provider, its usage unread here."""
    ctx.cut_tries += 1
    close_answer(answer)


async def _json_repaired(
    ctx: RequestContext, res: Resilience, answer: Answer, deadline: Deadline
) -> Answer:
    """With `json_repair: retry`, an answer that is not the JSON the client asked for is
    asked for once more from the same target; the better of the two is kept. The first is
    in hand: a second try the deadline cuts short leaves it the answer (outside the first
    answer's timeout, which would have thrown it away for a 504)."""
    route, _ = ctx.target()
    if answer.streaming or route.json_repair != "retry":
        return answer
    if not wants_json(ctx.request.path, ctx.payload):
        return answer
    parsed = _parsed(answer)
    if "invalid_json" not in anomalies(ctx.request.path, ctx.payload, parsed):
        return answer
    res.stats.retries[(answer.target.provider.name, "invalid_json")] += 1
    _log.info("json_repair", request_id=ctx.request_id, target=answer.target.label)
    add_anomaly(ctx, "invalid_json")
    remaining = deadline.remaining_s()
    if remaining <= 0:
        return answer
    try:
        async with asyncio.timeout(remaining):
            second = await attempt(ctx, res, answer.target, deadline)
    except (AttemptFailed, TimeoutError):
        return answer
    # The provider bills both answers, so the request is charged for both.
    second.earlier_usage = answer.target.provider.usage_from_body(parsed)
    return second


def _parsed(answer: Answer) -> object:
    try:
        return orjson.loads(answer.body or b"")
    except orjson.JSONDecodeError:
        return None


async def _give_up(
    ctx: RequestContext, res: Resilience, failed: AttemptFailed
) -> web.StreamResponse:
    """Every target failed: a stale cached answer if there is one, else the last error."""
    _answered_by(ctx, failed.target)
    passthrough = failed.passthrough
    ctx.error_code = failed.reason if passthrough is not None else failed.error.code
    if not _client_error(failed):
        stale = await _stale(ctx, res)
        if stale is not None:
            return stale
    if passthrough is None:
        raise failed.error
    return provider_error_response(ctx, passthrough)


async def _give_up_late(
    ctx: RequestContext, res: Resilience, deadline: Deadline
) -> web.StreamResponse:
    error = deadline.error()
    ctx.error_code = error.code
    _log.info("deadline_passed", request_id=ctx.request_id, deadline_s=deadline.total_s)
    stale = await _stale(ctx, res)
    if stale is not None:
        return stale
    raise error


def _client_error(failed: AttemptFailed) -> bool:
    """A refusal of the request itself, which a stale answer must not hide."""
    status = failed.passthrough.status if failed.passthrough else None
    return status is not None and 400 <= status < 500 and status not in RETRIABLE_STATUSES


async def _stale(ctx: RequestContext, res: Resilience) -> web.StreamResponse | None:
    if ctx.stale_answer is None:
        return None
    response = await ctx.stale_answer(ctx)
    if response is None:
        return None
    route, _ = ctx.target()
    ctx.outcome = "stale"
    res.stats.stale_served[route.name] += 1
    _log.info("stale_served", request_id=ctx.request_id, route=route.name, why=ctx.error_code)
    return response


def _answered_by(ctx: RequestContext, target: Target) -> None:
    """Accounting prices by the target that produced the answer; the route stays the same."""
    ctx.provider = target.provider
    ctx.upstream_model = target.model

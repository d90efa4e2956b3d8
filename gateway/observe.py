"""Per-request observation: metrics from the finished context, the upstream timer, the log."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from gateway.context import RequestContext
from gateway.logs import status_sent
from gateway.metrics import ANOMALIES, METRICS, NONE, OTHER, Metrics
from gateway.pipeline import Next, Stage
from gateway.pricing import MICRO
from gateway.requestlog import REQUEST_LOG

# The cache result label of each cache status; any other: "other".
_CACHE_RESULTS = {"HIT": "hit", "MISS": "miss", "BYPASS": "bypass", "STALE": "stale", None: NONE}
_REJECTED_4XX = {
    401: "auth",
    403: "forbidden",
    400: "bad_request",
    404: "not_found",
    413: "too_large",
}


def record_request(ctx: RequestContext, fields: dict[str, Any], data: bytes | None = None) -> None:
    """Called once per request by `finish`, after the finish hooks (cost is known); `data`:
    the fields' JSON, when the log line made it."""
    app = ctx.app
    record_metrics(app[METRICS], ctx)
    log = app.get(REQUEST_LOG)
    if log is not None:
        log.write(fields, data)


def record_metrics(m: Metrics, ctx: RequestContext) -> None:
    """Into the plain sums of `m` (see `Metrics.fold`), once per request."""
    cache = cache_result(ctx)
    slot = m.slot(
        (
            ctx.key.name if ctx.key else None,
            ctx.route.name if ctx.route else None,
            ctx.provider.name if ctx.provider else None,
            ctx.upstream_model or ctx.model,
        ),
        status_label(ctx),
        cache,
    )
    counts, observe = m.counts, m.observe_at
    at = slot.requests
    counts[at] = counts.get(at, 0) + 1
    elapsed = ctx.elapsed_s()
    observe(slot.duration, elapsed)
    observe(slot.overhead, ctx.overhead_s(elapsed))
    observe(slot.store_wait, ctx.store_wait_s)
    if ctx.stream and ctx.ttfb_s is not None:
        observe(slot.ttft, ctx.ttfb_s)
    upstream_s = ctx.upstream_s
    if upstream_s is not None and ctx.attempts:  # not a request refused on its way there
        observe(slot.upstream, upstream_s)
    served_from_cache = cache in ("hit", "stale")
    usage = ctx.usage
    add = m.add_at
    if usage is not None and not served_from_cache:
        cached = usage.cached_input_tokens
        add(slot.tokens_input, max(0, usage.input_tokens - cached))
        add(slot.tokens_cached, cached)
        add(slot.tokens_output, usage.output_tokens)
    if ctx.cost_micro is not None:
        add(slot.cost, ctx.cost_micro / MICRO)
    if ctx.cost_source == "unpriced":
        add(slot.unpriced, 1)
    if cache != NONE and ctx.outcome != "rejected":  # a refused request looked nothing up
        add(slot.cache_lookups, 1)
        if served_from_cache:
            add(slot.cache_saved_usd, ctx.saved_micro / MICRO)
            if usage is not None:
                add(slot.cache_saved_tokens, usage.input_tokens + usage.output_tokens)
    if ctx.outcome != "ok":
        reason = rejection_reason(ctx)
        if reason is not None:
            m.add(m.rejections, (slot.key, slot.route, reason))
    for kind in dict.fromkeys(ctx.anomalies) if ctx.anomalies else ():
        m.add(m.anomalies, (slot.route, slot.model, kind if kind in ANOMALIES else OTHER))


def cache_result(ctx: RequestContext) -> str:
    """hit, miss, bypass or stale; "none" when the request never reached the cache."""
    return _CACHE_RESULTS.get(ctx.cache_status, OTHER)


def status_label(ctx: RequestContext) -> str:
    """The HTTP status sent, as the log line gives it (499 when the client left before any)."""
    status = status_sent(ctx)
    if status is None:
        return "500"
    return str(status) if 100 <= status <= 599 else OTHER


def rejection_reason(ctx: RequestContext) -> str | None:
    """Why the gateway itself refused the request; None when it did not."""
    status = ctx.status
    if ctx.outcome == "rejected" and status is not None:
        if status == 429:
            return "budget" if ctx.error_code == "insufficient_quota" else "rate_limit"
        return _REJECTED_4XX.get(status, "other")
    if ctx.outcome == "failed" and status == 503:
        return "unavailable"  # circuit open, shedding, or the budget store unreachable
    return None


def timed_upstream(stage: Stage) -> Stage:
    """Wraps the terminal stage: the upstream exchange's duration per request, and the
    streams under way.

    The exchange starts when the terminal stage marks it (`ctx.upstream_started`, once the
    limits' verdict is in) and ends when the stage returns, after the last byte of a stream
    was relayed; a cache hit never reaches it, a refused request never starts it.
    """

    async def run(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
        metrics = ctx.app[METRICS]
        gauge = metrics.streams_in_flight if ctx.stream else None
        if gauge is not None:
            gauge.inc()
        try:
            return await stage(ctx, call_next)
        finally:
            if gauge is not None:
                gauge.dec()
            started = ctx.upstream_started
            if started is not None:
                ctx.upstream_s = time.perf_counter() - started

    return run

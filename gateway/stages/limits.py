"""Stage: rate limits and budget reservation before the call; the bill after the answer.

Acts after routing (it needs the route and model) and before the cache, so a cache hit is
still a request against the rate limit, and is settled at zero cost.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp import web

from gateway.accounting import Plan, bill, local_periods, plan_for, stat_fields
from gateway.alerts import announce_crossings
from gateway.context import RequestContext
from gateway.errors import BudgetExhausted, GatewayError, RateLimited, Unavailable
from gateway.metrics import METRICS
from gateway.pipeline import Next
from gateway.pricing import usd
from gateway.stages.gates import open_gate, passed
from gateway.store.accounting import ACCOUNTING, Reserved, StoreUnavailable
from gateway.store.accounting import BudgetExhausted as Exhausted
from gateway.store.accounting import RateLimited as Limited

_log = structlog.get_logger("gateway.accounting")

# The store's (day, month) period ids of a reservation.
Period = tuple[str, str]
# Per process: what each key spent unchecked while the store was out (allowance policy).
OUTAGE_SPEND = web.AppKey("outage_spend", dict[str, int])
# Per process: unpriced models already warned about (one warning each).
UNPRICED_SEEN = web.AppKey("unpriced_seen", set[str])


async def enforce_limits(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
    plan = plan_for(ctx)
    if plan.billable and plan.price is None:
        _warn_unpriced(ctx, plan)
    reservation = open_gate(ctx, _reserve(ctx, plan)) if plan.needs_store else None
    ctx.on_finish.append(lambda c: _settle_after(c, plan, reservation))
    try:
        response = await call_next(ctx)
        await passed(ctx)  # already passed, unless no later stage answered from upstream
    except GatewayError as err:
        if _refused(reservation, err):
            raise  # refused before the call: no cost to state
        ctx.status, ctx.error_code = err.status, err.code
        _price_header(ctx, plan)
        raise
    if not response.prepared:  # a stream's headers left before its cost was known
        _price_header(ctx, plan)
    return response


def _warn_unpriced(ctx: RequestContext, plan: Plan) -> None:
    seen = ctx.app[UNPRICED_SEEN]
    model = ctx.upstream_model or ""
    if model not in seen and len(seen) < 1000:  # bounded: model names come from clients
        seen.add(model)
        _log.warning(
            "unpriced_model",
            model=model,
            billed_usd=usd(plan.amount_micro),
            hint="add it under `pricing:` in the config",
        )


def _price_header(ctx: RequestContext, plan: Plan) -> None:
    cost, _, _ = bill(ctx, plan)
    ctx.response_headers["x-gateway-cost-usd"] = usd(cost)


async def _reserve(ctx: RequestContext, plan: Plan) -> Period | None:
    """Reserve the worst case against every budget and take from the rate limits; returns
    the store's (day, month) period ids, or None when the store is out (and policy allows)."""
    key = ctx.authenticated_key()
    accounting = ctx.app[ACCOUNTING]
    try:
        result = await accounting.reserve(
            ctx.request_id,
            plan.amount_micro,
            plan.tokens,
            ctx.runtime.config.accounting.reservation_ttl_s * 1000,
            plan.rpm,
            plan.tpm,
            key.name,
            plan.scopes,
        )
    except StoreUnavailable as exc:
        _on_store_error(ctx, plan, exc)
        return None
    if isinstance(result, Limited):
        raise _rate_limited(result, plan)
    if isinstance(result, Exhausted):
        raise _exhausted(result, plan)
    _limit_headers(ctx, plan, result)
    return result.day, result.month


def _limit_headers(ctx: RequestContext, plan: Plan, result: Reserved) -> None:
    headers = ctx.response_headers
    if result.remaining_micro is not None:
        headers["x-gateway-budget-remaining-usd"] = usd(result.remaining_micro)
    if plan.rpm and result.remaining_requests is not None:
        headers["x-ratelimit-limit-requests"] = str(plan.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, result.remaining_requests))
        used = plan.rpm - max(0, result.remaining_requests)
        headers["x-ratelimit-reset-requests"] = f"{used * 60 / plan.rpm:.3g}s"


def _rate_limited(result: Limited, plan: Plan) -> GatewayError:
    limit = plan.rpm if result.which == "rpm" else plan.tpm
    unit = "requests" if result.which == "rpm" else "tokens"
    if result.never:
        err: GatewayError = RateLimited(
            f"This request needs about {plan.tokens} tokens, more than the key's limit of "
            f"{limit} tokens per minute; lower max_tokens or the prompt size.",
            code="request_too_large_for_limit",
        )
        err.should_retry = False
        return err
    wait_s = math.ceil(result.retry_after_ms / 1000)
    return RateLimited(
        f"Rate limit of {limit} {unit} per minute reached for this key; "
        f"retry in {result.retry_after_ms / 1000:.1f}s.",
        headers={
            "Retry-After": str(wait_s),
            "retry-after-ms": str(result.retry_after_ms),
            f"x-ratelimit-limit-{unit}": str(limit),
            f"x-ratelimit-remaining-{unit}": "0",
            f"x-ratelimit-reset-{unit}": f"{result.retry_after_ms / 1000:.3g}s",
        },
    )


def _exhausted(result: Exhausted, plan: Plan) -> GatewayError:
    label = next((s.label for s in plan.scopes if s.name == result.scope), result.scope)
    resets = _reset_time(result.period, result.day, result.month)
    if result.period == "tokens":
        spent = f"{result.used} of its {result.limit} tokens this month"
    else:
        spent = f"${usd(result.used)} of its ${usd(result.limit)} budget this {result.period}"
    return BudgetExhausted(
        f"Budget exhausted: {label} has used {spent} (this request may cost up to "
        f"${usd(plan.amount_micro)}). It resets at {resets}.",
        headers={"x-gateway-budget-remaining-usd": "0.000000", "x-gateway-budget-resets": resets},
    )


def _reset_time(period: str, day: str, month: str) -> str:
    if period == "day":
        start = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)
        nxt = start + timedelta(days=1)
    else:
        start = datetime.strptime(month, "%Y%m").replace(tzinfo=UTC)
        nxt = (start + timedelta(days=32)).replace(day=1)
    return nxt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _on_store_error(ctx: RequestContext, plan: Plan, exc: StoreUnavailable) -> None:
    """Budgets fail closed (or within a per-process allowance); rate limits fail open."""
    _log.warning("store_unavailable", stage="limits", request_id=ctx.request_id, error=str(exc))
    ctx.app[METRICS].redis_error("budget")
    if not plan.scopes:
        return
    key = ctx.authenticated_key()
    config = ctx.runtime.config.accounting
    if config.budget_on_store_error == "allowance":
        allowance = ctx.app[OUTAGE_SPEND]
        spent = allowance.get(key.name, 0) + plan.amount_micro
        if spent <= round(key.outage_allowance_usd * 1_000_000):
            allowance[key.name] = spent
            return
    raise Unavailable(
        "The budget store is unreachable, so spending cannot be checked; try again shortly.",
        code="budget_store_unavailable",
    )


def _refused(reservation: asyncio.Task[Period | None] | None, err: BaseException) -> bool:
    if reservation is None or not reservation.done() or reservation.cancelled():
        return False
    return reservation.exception() is err


async def _settle_after(
    ctx: RequestContext, plan: Plan, reservation: asyncio.Task[Period | None] | None
) -> None:
    """Settle once the reservation's verdict is in; a refused request reserved nothing."""
    if reservation is None:
        await _settle(ctx, plan, None)
        return
    if reservation.cancelled():
        return
    try:
        period = await reservation
    except GatewayError:
        return
    await _settle(ctx, plan, period)


async def _settle(ctx: RequestContext, plan: Plan, period: Period | None) -> None:
    """Charge the actual cost (even above the reservation) and release the rest. Finish
    hooks run to their end even when the client goes away (they run in a task of their own)."""
    cost, source, tokens = bill(ctx, plan)
    ctx.cost_micro, ctx.cost_source = cost, source
    accounting = ctx.app[ACCOUNTING]
    accounting.count((period or local_periods())[1], stat_fields(ctx, cost, tokens))
    if period is None:  # nothing was reserved (none needed, or the store was out)
        return
    try:
        crossings = await accounting.settle(
            ctx.request_id,
            (cost, tokens),
            (plan.amount_micro, plan.tokens),
            period,
            plan.tpm,
            ctx.authenticated_key().name,
            plan.scopes,
        )
    except StoreUnavailable as exc:
        ctx.app[METRICS].redis_error("settle")
        # The log line still carries the cost: the spend is recorded there, not lost.
        _log.error(
            "spend_not_stored", request_id=ctx.request_id, cost_usd=usd(cost), error=str(exc)
        )
        return
    announce_crossings(ctx, plan.scopes, crossings)

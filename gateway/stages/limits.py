"""Stage: rate limits and budget reservation before the call; the bill after the answer.

Acts after routing (it needs the route and model) and before the cache, so a cache hit is
still a request against the rate limit; it holds nothing, so it has nothing to settle.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiohttp import web

from gateway.accounting import Plan, bill, local_periods, plan_for, stat_fields
from gateway.alerts import announce_crossings
from gateway.context import RequestContext
from gateway.errors import BudgetExhausted, GatewayError, RateLimited, Unavailable
from gateway.metrics import METRICS
from gateway.pipeline import Next
from gateway.pricing import usd
from gateway.stages.gates import Carried, Probe, passed, verdict_in
from gateway.store.accounting import ACCOUNTING, Reserved, StoreUnavailable, reservation_reply
from gateway.store.accounting import BudgetExhausted as Exhausted
from gateway.store.accounting import RateLimited as Limited
from gateway.store.coalesce import ON_ORPHAN

_log = structlog.get_logger("gateway.accounting")

# The store's (day, month) period ids of a reservation.
Period = tuple[str, str]
# Per process: unpriced models already warned about (one warning each).
UNPRICED_SEEN = web.AppKey("unpriced_seen", set[str])


async def enforce_limits(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
    plan = plan_for(ctx)
    if plan.billable and plan.price is None:
        _warn_unpriced(ctx, plan)
    gate = _Reservation(plan, ctx.app[ACCOUNTING].answers_orphans) if plan.needs_store else None
    ctx.gate = gate
    ctx.on_finish.append(lambda c: _settle_after(c, plan, gate))
    try:
        response = await call_next(ctx)
        if not verdict_in(ctx, hold=False):  # in already, unless no later stage asked
            await passed(ctx, hold=False)
    except GatewayError as err:
        if _refused(gate, err):
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


class _Reservation:
    """The request's gate (see gateway.stages.gates): rate limits and the budget reservation,
    asked of the store when a later stage first needs the verdict."""

    __slots__ = ("_holds", "_inline", "_plan", "carried", "unchecked", "verdict")

    def __init__(self, plan: Plan, inline: bool) -> None:
        self._plan = plan  # not the context, which refers to this gate
        # The latest ask: the store's (day, month) ids of what it holds for the request, or
        # None when it holds nothing (a check only, or the store out and policy allows).
        self.verdict: asyncio.Future[Period | None] | None = None
        self._holds = False  # the worst case is held, or asked to be
        self._inline = inline  # the first ask may run in the request's own task (see `ask`)
        self.carried: Carried | None = None  # a write to send in the settle's command
        # What it was let through for unchecked, the store being out (see _on_store_error).
        self.unchecked: int | None = None

    def carry(self, write: Carried) -> bool:
        """Take `write` along in the settle, when the store holds something for the request
        (its settle then follows the answer for sure); else leave it to the caller."""
        verdict = self.verdict
        if self.carried is not None or verdict is None or not verdict.done():
            return False
        if verdict.cancelled() or verdict.exception() is not None or verdict.result() is None:
            return False
        self.carried = write
        return True

    @property
    def started(self) -> bool:
        return self.verdict is not None

    async def ask(self, ctx: RequestContext, hold: bool = True, probe: Probe | None = None) -> None:
        """The first ask, run in the caller's own task: the store's reply resumes the request
        directly, where a task of its own would take two more turns of the event loop (its
        start, then waking the request), each behind every request queued meanwhile. Its
        verdict is in when this returns (a refusal is kept in it, for `passed` to raise). A
        request cancelled while it waits (its client gone) is not left holding anything
        unknown: the store client hands the reply to `_orphaned`, which gives the verdict
        that the request's settlement waits for. Where the store cannot do that (the
        embedded store, a cluster), or once asked, as `start`."""
        if self.verdict is not None or not self._inline:
            self.start(ctx, hold, probe)
            return
        verdict: asyncio.Future[Period | None] = asyncio.get_running_loop().create_future()
        self.verdict, self._holds = verdict, hold
        keep = ON_ORPHAN.set(functools.partial(self._orphaned, verdict, probe is not None))
        try:
            period = await self._reserve(ctx, hold, probe)
        except Exception as exc:  # a refusal (or a failure): the verdict, raised by `passed`
            _answer(probe, None)  # answered already on a refusal; never left waiting
            verdict.set_exception(exc)
            return
        finally:
            ON_ORPHAN.reset(keep)
        verdict.set_result(period)

    def _orphaned(self, verdict: asyncio.Future[Period | None], read: bool, reply: Any) -> None:
        """The reservation's reply after its request was cancelled: what the store holds, for
        the settlement. A failure or a script that did not run holds nothing known (a hold
        the store kept all the same is charged by the sweep, as for a process that died)."""
        if verdict.done():
            return
        if isinstance(reply, BaseException):
            verdict.set_result(None)
            return
        try:
            result = reservation_reply(reply, read)
        except Exception:  # not a reservation's reply: nothing known is held
            verdict.set_result(None)
            return
        if isinstance(result, Reserved):
            verdict.set_result(_held(result))
        else:
            verdict.set_exception(_refusal(result, self._plan))

    def start(
        self, ctx: RequestContext, hold: bool = True, probe: Probe | None = None
    ) -> asyncio.Future[Period | None]:
        task = self.verdict
        if task is None:
            self._holds = hold
            task = self.verdict = _spawn(self._reserve(ctx, hold, probe))
        elif hold and not self._holds:  # checked without holding, and now going upstream
            self._holds = True
            task = self.verdict = _spawn(self._top_up(ctx, task))
        return task

    async def _top_up(
        self, ctx: RequestContext, check: asyncio.Future[Period | None]
    ) -> Period | None:
        await check  # a refusal stands; its request was counted against the rate limit
        return await self._reserve(ctx, hold=True, probe=None, count_request=False)

    async def _reserve(
        self, ctx: RequestContext, hold: bool, probe: Probe | None, count_request: bool = True
    ) -> Period | None:
        """Check the rate limits and every budget, and (with `hold`) hold the worst case."""
        plan = self._plan
        key = ctx.authenticated_key()
        try:
            result = await ctx.app[ACCOUNTING].reserve(
                ctx.unique_id,
                plan.amount_micro,
                plan.tokens,
                ctx.runtime.config.accounting.reservation_ttl_s * 1000,
                plan.rpm if count_request else 0,
                plan.tpm,
                key.name,
                plan.scopes,
                hold,
                None if probe is None else probe.rider,
            )
        except StoreUnavailable as exc:
            _answer(probe, exc)
            self.unchecked = _on_store_error(ctx, plan, exc, hold)
            return None
        if not isinstance(result, Reserved):
            _answer(probe, None)
            raise _refusal(result, plan)
        self._holds = result.held  # before the reader wakes: a hit it cannot serve tops up
        _answer(probe, result.read)
        _limit_headers(ctx, plan, result)
        return _held(result)


def _held(result: Reserved) -> Period | None:
    """The store's (day, month) ids of what it holds for the request; None when nothing."""
    return (result.day, result.month) if result.held else None


def _refusal(result: Limited | Exhausted, plan: Plan) -> GatewayError:
    return _rate_limited(result, plan) if isinstance(result, Limited) else _exhausted(result, plan)


def _spawn(check: Coroutine[Any, Any, Period | None]) -> asyncio.Task[Period | None]:
    return asyncio.get_running_loop().create_task(check)


def _answer(probe: Probe | None, reply: object) -> None:
    """Hand a probe its reply (or the store's error), unless its reader has gone."""
    if probe is None or probe.reply.done():
        return
    if isinstance(reply, BaseException):
        probe.reply.set_exception(reply)
    else:
        probe.reply.set_result(reply)


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
    # What the store counts: spent, and held for requests still in flight.
    if result.period == "tokens":
        spent = f"{result.used} of its {result.limit} tokens this month"
        most = f"use up to {plan.tokens} tokens"
    else:
        spent = f"${usd(result.used)} of its ${usd(result.limit)} budget this {result.period}"
        most = f"cost up to ${usd(plan.amount_micro)}"
    return BudgetExhausted(
        f"Budget exhausted: {label} has spent or reserved {spent} (this request may {most}). "
        f"It resets at {resets}.",
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


def _on_store_error(
    ctx: RequestContext, plan: Plan, exc: StoreUnavailable, hold: bool
) -> int | None:
    """Budgets fail closed, or within a per-process allowance per outage (what the request
    is let through for, its worst case, is returned: its cost is charged to its budgets once
    the store is back); rate limits fail open (None: nothing to charge later)."""
    _log.warning("store_unavailable", stage="limits", request_id=ctx.request_id, error=str(exc))
    ctx.app[METRICS].redis_error("budget")
    if not plan.scopes:
        return None
    key = ctx.authenticated_key()
    config = ctx.runtime.config.accounting
    if config.budget_on_store_error == "allowance":
        amount = plan.amount_micro if hold else 0
        allowance = round(key.outage_allowance_usd * 1_000_000)
        if ctx.app[ACCOUNTING].admit_unchecked(key.name, amount, allowance):
            return amount
    raise Unavailable(
        "The budget store is unreachable, so spending cannot be checked; try again shortly.",
        code="budget_store_unavailable",
    )


def _refused(gate: _Reservation | None, err: BaseException) -> bool:
    reservation = gate.verdict if gate is not None else None
    if reservation is None or not reservation.done() or reservation.cancelled():
        return False
    return reservation.exception() is err


def _settle_after(
    ctx: RequestContext, plan: Plan, gate: _Reservation | None
) -> Awaitable[None] | None:
    """Settle once the reservation's verdict is in; a refused request reserved nothing, nor
    did one whose gate no stage asked. At once when nothing is held (a hit, a check only):
    None; else what is left to await."""
    if gate is None or gate.verdict is None:
        return _settle(ctx, plan, None)
    reservation = gate.verdict
    if reservation.cancelled():
        return None
    if not reservation.done():
        return _settle_when_in(ctx, plan, gate, reservation)
    if isinstance(reservation.exception(), GatewayError):
        return None
    carried, gate.carried = gate.carried, None  # it refers to the context: no cycle left
    return _settle(ctx, plan, reservation.result(), carried, gate.unchecked)


async def _settle_when_in(
    ctx: RequestContext,
    plan: Plan,
    gate: _Reservation,
    reservation: asyncio.Future[Period | None],
) -> None:
    try:
        period = await reservation
    except GatewayError:
        return
    rest = _settle(ctx, plan, period, unchecked=gate.unchecked)
    if rest is not None:
        await rest


def _settle(
    ctx: RequestContext,
    plan: Plan,
    period: Period | None,
    carried: Carried | None = None,
    unchecked: int | None = None,
) -> Awaitable[None] | None:
    """Charge the actual cost (even above the reservation) and release the rest: the cost
    and the statistics at once, then (when something is held) the store's settle to await,
    with the write `carried` along (which only a request holding something has). A request
    let through `unchecked` while the store was out owes its cost, charged once the store is
    back. Finish hooks run to their end even when the client goes away (in a task of their
    own)."""
    try:
        cost, source, tokens = bill(ctx, plan)
        ctx.cost_micro, ctx.cost_source = cost, source
        accounting = ctx.app[ACCOUNTING]
        periods = period or local_periods()
        accounting.count(periods[1], stat_fields(ctx, cost, tokens))
        if unchecked is not None and period is None:
            key = ctx.authenticated_key().name
            accounting.owe(key, plan.scopes, periods, (cost, tokens), unchecked)
    except BaseException as exc:
        if carried is not None:  # not sent: its writer learns so
            carried.done(exc)
        raise
    if period is None:  # nothing is held (none needed, a hit, or the store was out)
        return None
    return _settle_held(ctx, plan, period, cost, tokens, carried)


async def _settle_held(
    ctx: RequestContext,
    plan: Plan,
    period: Period,
    cost: int,
    tokens: int,
    carried: Carried | None = None,
) -> None:
    accounting = ctx.app[ACCOUNTING]
    outcome: BaseException | None = None
    try:
        crossings = await accounting.settle(
            ctx.unique_id,
            (cost, tokens),
            (plan.amount_micro, plan.tokens),
            period,
            plan.tpm,
            ctx.authenticated_key().name,
            plan.scopes,
            None if carried is None else carried.rider,
        )
    except StoreUnavailable as exc:
        outcome = exc
        ctx.app[METRICS].redis_error("settle")
        # The log line still carries the cost: the spend is recorded there, not lost.
        _log.error(
            "spend_not_stored", request_id=ctx.request_id, cost_usd=usd(cost), error=str(exc)
        )
        return
    except BaseException as exc:
        outcome = exc
        raise
    finally:
        if carried is not None:
            carried.done(outcome)
    announce_crossings(ctx, plan.scopes, crossings)

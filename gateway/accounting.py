"""What a request may cost before the call (its plan) and what it cost after (the bill)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from gateway.config import KeyConfig, RouteConfig
from gateway.context import RequestContext, Usage
from gateway.pricing import MICRO, Price
from gateway.records import record
from gateway.runtime import Runtime
from gateway.store.accounting import Scope, StatFields

# Outcomes after which the provider may have billed tokens we never saw a usage report for.
_MAYBE_BILLED = frozenset(
    {"client_disconnected", "malformed_answer", "stream_interrupted", "shutdown"}
)
_MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@record
class Plan:
    """Decided before the upstream call; settled against after the answer."""

    billable: bool
    model: str  # the model priced: the route's; a fallback that answers is priced as itself
    price: Price | None  # None: unpriced model, billed at `amount_micro`
    input_estimate: int
    amount_micro: int  # the worst case, reserved against every budget
    tokens: int  # input estimate + maximum output, for tokens-per-minute and token budgets
    scopes: tuple[Scope, ...]
    rpm: int
    tpm: int

    @property
    def needs_store(self) -> bool:
        return bool(self.scopes or self.rpm or self.tpm)


def plan_for(ctx: RequestContext) -> Plan:
    key = ctx.authenticated_key()
    runtime = ctx.runtime
    billable = ctx.request.method == "POST" and ctx.request.path in ctx.dialect.model_endpoints
    billable = billable and not ctx.request.path.endswith("/count_tokens")
    model = ctx.upstream_model or ""
    price = runtime.prices.get(model)
    input_estimate = len(ctx.upstream_body) // 4 + 1 if billable else 0
    output = max_output_tokens(ctx) if billable else 0
    if not billable:
        amount = 0
    elif price is None:
        amount = _unpriced_micro(ctx)
    else:
        amount = price.worst_case_micro(input_estimate, output)
    limits = key.rate_limit
    return Plan(
        billable=billable,
        model=model,
        price=price,
        input_estimate=input_estimate,
        amount_micro=amount,
        tokens=input_estimate + output,
        scopes=scopes_for(ctx, runtime) if billable else (),
        rpm=(limits.rpm or 0) if limits else 0,
        tpm=(limits.tpm or 0) if limits and billable else 0,
    )


def max_output_tokens(ctx: RequestContext) -> int:
    """The request's own cap, else the route's default, for each answer it asks for (`n`;
    on legacy completions `best_of`, which is generated and billed whole); embeddings
    produce none."""
    if ctx.request.path == "/v1/embeddings":
        return 0
    payload = ctx.payload or {}
    cap = 0
    for name in _MAX_TOKEN_FIELDS:
        cap = _count(payload.get(name))
        if cap:
            break
    if not cap:
        route, _ = ctx.target()
        cap = route.default_max_output_tokens
    if "n" not in payload and "best_of" not in payload:  # one answer, as most ask
        return cap
    return cap * max(_count(payload.get("n")), _count(payload.get("best_of")), 1)


def _count(value: Any) -> int:
    """A positive count, else 0, read as a lenient provider reads it (servers that validate
    with pydantic's lax mode take `2e7` and `"100"`): an integer, a number (rounded up: a
    reservation may hold too much, never too little) or a numeric string. A bool, or
    anything else, is no count."""
    if type(value) is int:
        return min(value, _MAX_COUNT) if value > 0 else 0
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return 0
    if isinstance(value, float) and value > 0:
        return min(math.ceil(value), _MAX_COUNT) if math.isfinite(value) else _MAX_COUNT
    return 0


# More tokens than any model answers with, and few enough that any amount priced from them
# fits the store's 64-bit counters (a larger cap is refused by a budget all the same).
_MAX_COUNT = 10**12


def scopes_for(ctx: RequestContext, runtime: Runtime) -> tuple[Scope, ...]:
    """Every budget the request is subject to: its key's, its route's, its key-on-route's."""
    route, _ = ctx.target()
    key = ctx.authenticated_key()
    known: tuple[Scope, ...] | None = runtime.scopes.get((key.name, route.name))
    if known is None:
        known = runtime.scopes[(key.name, route.name)] = _scopes(key, route)
    return known


def _scopes(key: KeyConfig, route: RouteConfig) -> tuple[Scope, ...]:
    found = [
        (f"k:{key.name}", f"key '{key.name}'", key.budget),
        (f"r:{route.name}", f"route '{route.name}'", route.budget),
        (
            f"kr:{key.name}:{route.name}",
            f"key '{key.name}' on route '{route.name}'",
            key.route_budgets.get(route.name),
        ),
    ]
    return tuple(
        Scope(
            name=name,
            label=label,
            day_micro=_micro(budget.usd_per_day),
            month_micro=_micro(budget.usd_per_month),
            month_tokens=budget.tokens_per_month,
        )
        for name, label, budget in found
        if budget is not None
    )


def _micro(usd: float | None) -> int | None:
    return None if usd is None else round(usd * MICRO)


def bill(ctx: RequestContext, plan: Plan) -> tuple[int, str, int]:
    """(cost in micro-dollars, how it is known, tokens) — the rules, in order:
    a cache hit costs nothing (a stale answer: nothing but the tries cut before it); an
    unpriced model costs its reservation; a usage report is priced; a cut stream is
    estimated from what was delivered; an answer the provider may have billed but never
    reported costs the reservation; a provider error costs nothing. Beside the answer,
    every other try cut while the provider worked on it (a hedge that lost, a per-try
    timeout before a retry) costs its reservation too."""
    usage = ctx.usage
    if ctx.from_cache:
        if usage is not None and not ctx.saved_micro:  # (billed twice: its header, its end)
            price = _price(ctx, plan)
            ctx.saved_micro = 0 if price is None else price.cost_micro(usage)
        if ctx.cut_tries:  # a stale answer, after every target failed
            return _stale_cut_tries(ctx, plan)
        return 0, "cache", 0
    if not plan.billable or ctx.attempts == 0:
        return 0, "none", 0
    cost, source, tokens = _charge(ctx, plan, usage)
    cut = ctx.cut_tries
    if cut and cost and ctx.ttfb_s is None:  # no answer: the charge is the try it ended on
        cut -= 1
    if not cut:
        return cost, source, tokens
    # Each other try cut while the provider worked on it, at its reservation (rule 5).
    return (
        cost + cut * plan.amount_micro,
        source if cost else "reserved",
        tokens + cut * plan.tokens,
    )


def _stale_cut_tries(ctx: RequestContext, plan: Plan) -> tuple[int, str, int]:
    """A cache entry costs nothing; but a stale one is served after every target failed,
    and the tries cut on the way (by a per-try timeout, or the deadline) may be billed."""
    if not plan.billable or ctx.cache_status != "STALE":
        return 0, "cache", 0
    cut = ctx.cut_tries
    return cut * plan.amount_micro, "reserved", cut * plan.tokens


def _charge(ctx: RequestContext, plan: Plan, usage: Usage | None) -> tuple[int, str, int]:
    """What the request's answer (or the lack of one) costs, rules 2 to 6."""
    price = _price(ctx, plan)
    cut = ctx.outcome in ("stream_interrupted", "client_disconnected") and ctx.stream_events > 0
    if cut and not ctx.usage_final:
        # What was seen, as the usage of the request: its log line and statistics count the
        # tokens it was billed for.
        seen = usage or Usage(input_tokens=plan.input_estimate)
        usage = ctx.usage = Usage(
            input_tokens=seen.input_tokens,
            output_tokens=max(seen.output_tokens, ctx.stream_events),
            cached_input_tokens=seen.cached_input_tokens,
            cache_write_tokens=seen.cache_write_tokens,
        )
        if price is not None:
            return price.cost_micro(usage), "estimate", _tokens(usage)
    answered = ctx.status is not None and ctx.status < 400 and ctx.outcome == "ok"
    maybe_billed = ctx.outcome in _MAYBE_BILLED or ctx.status == 504
    if price is None:  # not free: a flat amount, where a priced model would cost
        if usage is None and not answered and not maybe_billed:
            return 0, "none", 0  # a provider error, or the provider never reached
        flat = plan.amount_micro if plan.price is None else _unpriced_micro(ctx)
        return flat, "unpriced", _tokens(usage) or plan.tokens
    if usage is not None:
        return price.cost_micro(usage), "usage", _tokens(usage)
    if maybe_billed:
        return plan.amount_micro, "reserved", plan.tokens
    return 0, "none", 0


def _price(ctx: RequestContext, plan: Plan) -> Price | None:
    """The price of the model that answered: a fallback's own, not the route's model's."""
    model = ctx.upstream_model or ""
    return plan.price if model == plan.model else ctx.runtime.prices.get(model)


def _unpriced_micro(ctx: RequestContext) -> int:
    return round(ctx.runtime.config.accounting.unpriced_request_usd * MICRO)


def _tokens(usage: Usage | None) -> int:
    return usage.input_tokens + usage.output_tokens if usage else 0


def stat_fields(ctx: RequestContext, cost: int, tokens: int) -> StatFields:
    """Month-to-date counters for the admin statistics, per key, model, route and in total."""
    route, _ = ctx.target()
    key = ctx.authenticated_key()
    values = {"requests": 1}  # the counters that are not zero
    if cost:
        values["cost"] = cost
    if tokens:
        values["tokens"] = tokens
    if ctx.from_cache:  # a cache entry's tokens were not spent now
        # A stale answer is no hit: the hit rate is hits over hits and misses, as the
        # cache's own counters and the dashboard have it.
        values["hits" if ctx.cache_status == "HIT" else "stale"] = 1
    else:
        usage = ctx.usage
        if usage is not None:
            if usage.input_tokens:
                values["in"] = usage.input_tokens
            if usage.output_tokens:
                values["out"] = usage.output_tokens
        if ctx.cache_status == "MISS":
            values["misses"] = 1
    if ctx.saved_micro:
        values["saved"] = ctx.saved_micro
    names = (key.name, ctx.runtime.model_label(ctx.upstream_model), route.name)
    prefixes = _PREFIXES.get(names)
    if prefixes is None:
        if len(_PREFIXES) >= 4096:  # bounded: names come from the config and the price table
            _PREFIXES.clear()
        prefixes = _PREFIXES[names] = ("all", f"k:{names[0]}", f"m:{names[1]}", f"r:{names[2]}")
    return StatFields(prefixes=prefixes, values=values)


# (key, model label, route) -> the statistics' prefixes for them, made once.
_PREFIXES: dict[tuple[str, str, str], tuple[str, str, str, str]] = {}


def local_periods(now: datetime | None = None) -> tuple[str, str]:
    """UTC (day, month) ids from this process's clock, for statistics only (budgets use the
    store's clock, inside the reservation script)."""
    if now is not None:
        return now.strftime("%Y%m%d"), now.strftime("%Y%m")
    day = int(time.time() // 86400)
    if _today[0] != day:  # formatted once a day, not once a request
        _today[:] = [day, *local_periods(datetime.fromtimestamp(day * 86400, UTC))]
    return _today[1], _today[2]


_today: list[Any] = [None, "", ""]  # the UTC day number, and its (day, month) ids

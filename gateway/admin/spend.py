"""Admin views of money: per-key budgets (/admin/keys) and month-to-date stats (/admin/stats)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.accounting import local_periods
from gateway.config import BudgetConfig
from gateway.errors import Unavailable
from gateway.pricing import MICRO, usd
from gateway.routes import RUNTIME
from gateway.store.accounting import (
    ACCOUNTING,
    Accounting,
    StoreUnavailable,
    held_key,
    spent_key,
    tokens_key,
)


async def keys(request: web.Request) -> web.Response:
    """Per key: spent, held (open reservations) and limit, per period and per budget."""
    runtime = request.app[RUNTIME]
    accounting = request.app[ACCOUNTING]
    day, month = local_periods()
    try:
        await accounting.sweep()
        stats = await accounting.stats(month)
        out = []
        for key in runtime.config.keys:
            # Only the budgets it has: a key without one is not tracked per scope (its spend
            # is in cost_this_month_usd), and a block of zeros would say it spent nothing.
            own = [(f"k:{key.name}", "key", key.budget)] if key.budget is not None else []
            budgets = own + [
                (f"kr:{key.name}:{r}", f"route {r}", b) for r, b in key.route_budgets.items()
            ]
            entry: dict[str, Any] = {
                "name": key.name,
                "routes": key.routes,
                "requests_this_month": stats.get(f"k:{key.name}:requests", 0),
                "tokens_this_month": stats.get(f"k:{key.name}:tokens", 0),
                "cost_this_month_usd": usd(stats.get(f"k:{key.name}:cost", 0)),
                "budgets": [await _budget(accounting, s, w, b, day, month) for s, w, b in budgets],
            }
            out.append(entry)
        # A route's budget is every key's on it together: shown once, not under each key.
        routes = [
            {
                "name": r.name,
                **await _budget(accounting, f"r:{r.name}", "route", r.budget, day, month),
            }
            for r in runtime.config.routes
            if r.budget is not None
        ]
        open_reservations = await accounting.open_reservations()
    except StoreUnavailable as exc:
        raise Unavailable(f"The store is unreachable: {exc}", code="store_unavailable") from None
    body = {"keys": out, "routes": routes, "open_reservations": open_reservations}
    return web.json_response(body)


async def _budget(
    accounting: Accounting, scope: str, what: str, budget: BudgetConfig | None, day: str, month: str
) -> dict[str, Any]:
    names = [
        spent_key(scope, f"d{day}"),
        held_key(scope, f"d{day}"),
        spent_key(scope, f"m{month}"),
        held_key(scope, f"m{month}"),
        tokens_key(scope, month),
    ]
    spent_d, held_d, spent_m, held_m, tokens_m = await accounting.read(names)
    return {
        "scope": what,
        "day": {
            "spent_usd": usd(spent_d),
            "held_usd": usd(held_d),
            "limit_usd": _limit(budget, "d"),
        },
        "month": {
            "spent_usd": usd(spent_m),
            "held_usd": usd(held_m),
            "limit_usd": _limit(budget, "m"),
            "tokens": tokens_m,
            "limit_tokens": budget.tokens_per_month if budget else None,
        },
    }


def _limit(budget: BudgetConfig | None, period: str) -> str | None:
    if budget is None:
        return None
    value = budget.usd_per_day if period == "d" else budget.usd_per_month
    return None if value is None else usd(round(value * MICRO))


async def stats(request: web.Request) -> web.Response:
    """Totals and per key, model and route this month; cache hit rate; projected month end."""
    accounting = request.app[ACCOUNTING]
    now = datetime.now(UTC)
    _, month = local_periods(now)
    try:
        raw = await accounting.stats(month)
    except StoreUnavailable as exc:
        raise Unavailable(f"The store is unreachable: {exc}", code="store_unavailable") from None
    return web.json_response(summarise(raw, now))


def summarise(raw: dict[str, int], now: datetime) -> dict[str, Any]:
    groups: dict[str, dict[str, dict[str, int]]] = {"k": {}, "m": {}, "r": {}}
    for field, value in raw.items():
        kind, _, rest = field.partition(":")
        if kind in groups:
            name, _, metric = rest.rpartition(":")
            groups[kind].setdefault(name, {})[metric] = value
    total = {f.partition(":")[2]: v for f, v in raw.items() if f.startswith("all:")}
    days = calendar.monthrange(now.year, now.month)[1]
    elapsed = (now.day - 1) + (now.hour * 3600 + now.minute * 60 + now.second) / 86400
    cost = total.get("cost", 0)
    projected = round(cost * days / elapsed) if elapsed > 0 else cost
    return {
        "month": now.strftime("%Y-%m"),
        "total": _view(total),
        "projected_month_cost_usd": usd(projected),
        "keys": _ranked(groups["k"]),
        "models": _ranked(groups["m"]),
        "routes": _ranked(groups["r"]),
        "expired_reservations": raw.get("expired_reservations", 0),
    }


def _ranked(group: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    rows = [{"name": name, **_view(values)} for name, values in group.items()]
    return sorted(rows, key=lambda r: (-float(r["cost_usd"]), r["name"]))


def _view(v: dict[str, int]) -> dict[str, Any]:
    looked = v.get("hits", 0) + v.get("misses", 0)
    return {
        "requests": v.get("requests", 0),
        "input_tokens": v.get("in", 0),
        "output_tokens": v.get("out", 0),
        "cost_usd": usd(v.get("cost", 0)),
        "cache_hits": v.get("hits", 0),
        "cache_hit_rate": round(v.get("hits", 0) / looked, 4) if looked else None,
        "cache_stale": v.get("stale", 0),  # answered from an expired entry, the provider out
        "cache_saved_usd": usd(v.get("saved", 0)),
    }

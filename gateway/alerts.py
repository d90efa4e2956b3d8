"""Budget threshold alerts: one log event each, and an optional webhook notice per key."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
import structlog
from aiohttp import web

from gateway.config import KeyConfig
from gateway.context import RequestContext
from gateway.metrics import METRICS
from gateway.pricing import usd
from gateway.store.accounting import Crossing, Scope
from gateway.upstream import HTTP_SESSION

_log = structlog.get_logger("gateway.budget")
WEBHOOK_TIMEOUT_S = 5.0
# Running webhook posts: referenced so they are not collected before they finish.
_pending: set[asyncio.Task[None]] = set()


def announce_crossings(
    ctx: RequestContext, scopes: Sequence[Scope], crossings: Sequence[Crossing]
) -> None:
    """The settle script reports each crossing to exactly one request, across replicas."""
    if crossings:  # most settles cross nothing
        announce(ctx.app, ctx.authenticated_key(), scopes, crossings)


def announce(
    app: web.Application,
    key: KeyConfig | None,
    scopes: Sequence[Scope],
    crossings: Sequence[Crossing],
) -> None:
    """Each crossing logged and counted, and told to `key`'s webhook for its own budgets."""
    labels = {s.name: s.label for s in scopes}
    for c in crossings:
        notice: dict[str, object] = {
            "budget": labels.get(c.scope, c.scope),
            "scope": c.scope,
            "period": c.period,
            "percent": c.percent,
            **_amounts(c),
        }
        _log.warning("budget_threshold", **notice)
        app[METRICS].budget_alert(c.scope, c.percent)
        if key is not None and key.webhook_url and c.scope.startswith(("k:", "kr:")):
            session = app[HTTP_SESSION]
            body = {"event": "budget_threshold", **notice}
            task = asyncio.create_task(_post(session, key.webhook_url, body))
            _pending.add(task)
            task.add_done_callback(_pending.discard)


def _amounts(c: Crossing) -> dict[str, object]:
    if c.period == "tokens":
        return {"spent_tokens": c.spent, "limit_tokens": c.limit}
    return {"spent_usd": usd(c.spent), "limit_usd": usd(c.limit)}


async def _post(session: aiohttp.ClientSession, url: str, notice: dict[str, object]) -> None:
    try:
        async with session.post(
            url, json=notice, timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)
        ) as resp:
            if resp.status >= 300:
                _log.warning("budget_webhook_failed", status=resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        _log.warning("budget_webhook_failed", error=type(exc).__name__)

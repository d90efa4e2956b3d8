"""The ordered targets of one request: the route's provider, then its usable fallbacks."""

from __future__ import annotations

import orjson
import structlog

from gateway.context import RequestContext
from gateway.providers import Provider
from gateway.records import record
from gateway.resilience import ResilienceStats
from gateway.stages.body import reencode

_log = structlog.get_logger("gateway.upstream")


@record
class Target:
    """One (provider, model) to send the request to, with the body it gets."""

    provider: Provider
    model: str | None
    body: bytes

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.model}" if self.model else self.provider.name


def request_targets(ctx: RequestContext, stats: ResilienceStats) -> list[Target]:
    """The primary first, then each fallback in config order. A fallback that speaks another
    wire format than the client is skipped: bodies are passed through, not translated."""
    route, provider = ctx.target()
    targets = [Target(provider, ctx.upstream_model, ctx.upstream_body)]
    for fallback in route.fallbacks:
        other = ctx.runtime.providers[fallback.provider]
        model = fallback.model or ctx.upstream_model
        if other.kind != ctx.dialect.name:
            stats.targets_skipped[(route.name, other.name, "dialect")] += 1
            _log.warning(
                "fallback_skipped",
                request_id=ctx.request_id,
                route=route.name,
                target=f"{other.name}/{model}",
                reason="dialect",
                client_dialect=ctx.dialect.name,
                provider_kind=other.kind,
            )
            continue
        targets.append(Target(other, model, _body_for(ctx, model)))
    return targets


def _body_for(ctx: RequestContext, model: str | None) -> bytes:
    """The primary's upstream body (with what earlier stages changed in it), with the model
    replaced when the fallback names another one."""
    if ctx.payload is None or model is None or model == ctx.upstream_model:
        return ctx.upstream_body
    upstream = orjson.loads(ctx.upstream_body)
    # orjson keeps key order and every field the gateway does not know about.
    return (
        reencode({**upstream, "model": model}) if isinstance(upstream, dict) else ctx.upstream_body
    )

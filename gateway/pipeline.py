"""Composes the ordered list of request stages into one callable."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from gateway.context import RequestContext

Next = Callable[[RequestContext], Awaitable[web.StreamResponse]]
Stage = Callable[[RequestContext, Next], Awaitable[web.StreamResponse]]


async def _unreachable(ctx: RequestContext) -> web.StreamResponse:
    raise RuntimeError("the last stage must answer without calling the next one")


def compose(stages: Sequence[Stage]) -> Next:
    """Fold stages right to left: each one receives the rest of the chain as `call_next`."""
    chain: Next = _unreachable
    for stage in reversed(stages):
        chain = _bind(stage, chain)
    return chain


def _bind(stage: Stage, call_next: Next) -> Next:
    # A plain function handing back the stage's coroutine: one coroutine per stage and
    # request, not two.
    def run(ctx: RequestContext) -> Awaitable[web.StreamResponse]:
        return stage(ctx, call_next)

    return run

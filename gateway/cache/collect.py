"""Turn the answer the upstream stage just gave into an entry, if it is a complete success."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.cache.assemble import assemble
from gateway.cache.complete import is_complete
from gateway.cache.entries import Entry, now_ms
from gateway.cache.policy import Kind
from gateway.context import RequestContext


def answer_body(ctx: RequestContext, kind: Kind) -> tuple[bytes, Any] | None:
    """The answer as (non-stream JSON bytes, parsed object): the buffered body as the client
    received it, or the captured stream assembled."""
    if ctx.response_body is not None:
        if ctx.response_parsed is not None:
            return ctx.response_body, ctx.response_parsed
        try:
            return ctx.response_body, orjson.loads(ctx.response_body)
        except orjson.JSONDecodeError:
            return None
    if ctx.captured:
        assembled = assemble(kind, ctx.captured)
        return None if assembled is None else (orjson.dumps(assembled), assembled)
    return None


def collect(
    ctx: RequestContext, kind: Kind, status: int, ttl_s: int, max_bytes: int
) -> Entry | None:
    """The entry to store, or None: not a 200, not finished cleanly, incomplete, or too large."""
    if status != 200 or ctx.outcome != "ok":
        return None
    found = answer_body(ctx, kind)
    if found is None or not is_complete(kind, found[1]):
        return None
    _, provider = ctx.target()
    stored = now_ms()
    entry = Entry(
        kind=kind,
        body=found[0],
        usage=provider.usage_from_body(found[1]),
        stored_at_ms=stored,
        expires_at_ms=stored + ttl_s * 1000,
    )
    return entry if len(entry.body) <= max_bytes else None

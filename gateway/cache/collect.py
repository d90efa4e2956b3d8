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
    received it, or the captured stream assembled. None when it cannot be served again in
    both forms: JSON nested deeper than can be written again (orjson reads 1,024 levels and
    writes 254) would fail its replay as a stream, or its assembly now."""
    if ctx.response_body is not None:
        parsed = ctx.response_parsed
        if parsed is None:
            try:
                parsed = orjson.loads(ctx.response_body)
            except orjson.JSONDecodeError:
                return None
        return (ctx.response_body, parsed) if _writable(parsed) else None
    if ctx.captured:
        assembled = assemble(kind, ctx.captured)
        if assembled is None:
            return None
        try:
            return orjson.dumps(assembled), assembled
        except orjson.JSONEncodeError:
            return None
    return None


def _writable(parsed: Any) -> bool:
    try:
        orjson.dumps(parsed)
    except orjson.JSONEncodeError:
        return False
    return True


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

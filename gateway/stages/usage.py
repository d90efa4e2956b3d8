"""Stage: make sure the provider reports usage on OpenAI streams, invisibly to the client.

The client that did not ask for `stream_options.include_usage` gets exactly the stream it
asked for: the usage chunk the gateway requested is taken out on the way back.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from gateway.context import RequestContext
from gateway.pipeline import Next
from gateway.sse import split_events
from gateway.stages.body import reencode

_USAGE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
# The field `"usage": null` with any whitespace, and the comma that joins it to the object
# (before it, or after it when it comes first).
_NULL_USAGE = re.compile(rb'\s*,\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?\s*')


async def ensure_stream_usage(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
    payload = ctx.payload
    if ctx.stream and payload is not None and _needs_usage(ctx, payload):
        options = payload.get("stream_options")
        upstream = dict(payload)  # the client's payload stays as the client sent it
        upstream["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        ctx.upstream_body = reencode(upstream)
        ctx.stream_filter = UsageStrip()
    return await call_next(ctx)


def _needs_usage(ctx: RequestContext, payload: dict[str, Any]) -> bool:
    if ctx.dialect.name != "openai" or ctx.request.path not in _USAGE_PATHS:
        return False
    options = payload.get("stream_options")
    return not (isinstance(options, dict) and options.get("include_usage") is True)


class UsageStrip:
    """The stream filter of a request whose usage the gateway asked for: drops the usage-only
    chunk, and the `"usage":null` field OpenAI adds to every chunk once usage is asked for.
    The relay hands it whole events (and at the stream's end, a last one without its blank
    line), in any line-ending form."""

    __slots__ = ("_lf_owed",)

    def __init__(self) -> None:
        # The usage chunk dropped ended its read with a CR: the LF of its CRLF may come next.
        self._lf_owed = False

    def __call__(self, ctx: RequestContext, events: bytes) -> bytes:
        if self._lf_owed:
            self._lf_owed = False
            events = events.removeprefix(b"\n")
        if b"[]" in events:  # perhaps the usage chunk's `"choices":[]`
            events = self._without_usage_chunk(events)
        events = events.replace(b',"usage":null', b"")  # as OpenAI writes it: one cheap pass
        if b'"usage"' in events:  # spelled otherwise (`, "usage": null`): rarely
            events = _NULL_USAGE.sub(b"", events)
        return events

    def _without_usage_chunk(self, events: bytes) -> bytes:
        kept = []
        for event in split_events(events):
            if not _is_usage_chunk(event):
                kept.append(event)
                self._lf_owed = False
                continue
            # An LF before it ends the line before it (whose CR ended the read before).
            kept.append(b"\n" if event.startswith(b"\n") else b"")
            self._lf_owed = event.endswith(b"\r")
        return b"".join(kept)


def _is_usage_chunk(event: bytes) -> bool:
    if b'"usage"' not in event or b"[]" not in event:
        return False
    data = event.partition(b"data:")[2].strip()
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and bool(obj.get("usage"))

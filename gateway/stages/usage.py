"""Stage: make sure the provider reports usage on OpenAI streams, invisibly to the client.

The client that did not ask for `stream_options.include_usage` gets exactly the stream it
asked for: the usage chunk the gateway requested is taken out on the way back.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.context import RequestContext
from gateway.pipeline import Next

_USAGE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


async def ensure_stream_usage(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
    payload = ctx.payload
    strip = False
    if ctx.stream and payload is not None and _needs_usage(ctx, payload):
        options = payload.get("stream_options")
        upstream = dict(payload)  # the client's payload stays as the client sent it
        upstream["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        ctx.upstream_body = orjson.dumps(upstream)
        strip = True
    if ctx.stream:
        ctx.stream_filter = StreamTap(strip)
    return await call_next(ctx)


def _needs_usage(ctx: RequestContext, payload: dict[str, Any]) -> bool:
    if ctx.dialect.name != "openai" or ctx.request.path not in _USAGE_PATHS:
        return False
    options = payload.get("stream_options")
    return not (isinstance(options, dict) and options.get("include_usage") is True)


class StreamTap:
    """Counts the events relayed; with `strip`, drops the usage-only chunk and the
    `"usage":null` field OpenAI adds to every chunk once usage is asked for."""

    __slots__ = ("_buffer", "_strip")

    def __init__(self, strip: bool) -> None:
        self._strip = strip
        self._buffer = b""

    def __call__(self, ctx: RequestContext, chunk: bytes) -> bytes:
        if not self._strip:
            ctx.stream_events += chunk.count(b"\n\n")
            return chunk
        # Whole events only: an event split across reads waits for its end.
        buffer = self._buffer + chunk if self._buffer else chunk
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self._buffer = buffer
            return b""
        complete, self._buffer = buffer[: cut + 2], buffer[cut + 2 :]
        if b"[]" not in complete:  # no usage chunk among them: one pass over all of them
            ctx.stream_events += complete.count(b"\n\n")
            return complete.replace(b',"usage":null', b"")
        kept = []
        for event in complete.split(b"\n\n")[:-1]:
            ctx.stream_events += 1
            if not _is_usage_chunk(event):
                kept.append(event.replace(b',"usage":null', b"") + b"\n\n")
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

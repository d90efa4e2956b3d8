"""The capture of a streamed miss: bounded in memory, and the client's usage request read."""

from __future__ import annotations

from typing import Any

from gateway.context import RequestContext, StreamFilter

# SSE framing overhead: a stream is many times larger than the answer it carries (each
# OpenAI chunk repeats id, model and created), so the raw capture may exceed the entry limit
# by this factor before it is abandoned.
CAPTURE_FACTOR = 32


def asks_usage(payload: Any) -> bool:
    """Whether a body asks OpenAI for the stream's usage chunk."""
    options = payload.get("stream_options") if isinstance(payload, dict) else None
    return isinstance(options, dict) and options.get("include_usage") is True


class CaptureLimit:
    """A stream filter that runs on each chunk after it was captured: once the stream is too
    large to be stored, it stops the capture and frees what was held. Then hands the chunk to
    the filter that was there before (`then`)."""

    __slots__ = ("_left", "_then")

    def __init__(self, max_bytes: int, then: StreamFilter | None) -> None:
        self._left = max_bytes
        self._then = then

    def __call__(self, ctx: RequestContext, chunk: bytes) -> bytes:
        self._left -= len(chunk)
        if self._left < 0 and ctx.capture_stream:
            ctx.capture_stream = False
            ctx.captured.clear()
        return self._then(ctx, chunk) if self._then is not None else chunk

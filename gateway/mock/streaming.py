"""Server-sent-event framing, and delivering events with the step's delays and cut."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from aiohttp import web

from gateway.mock.state import ScriptStep

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def frame(data: bytes, event: str | None = None) -> bytes:
    """One event: an optional `event:` line, then the `data:` line and a blank line."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def truncate(events: list[bytes]) -> list[bytes]:
    """A malformed stream: the second event's JSON is cut in half."""
    if len(events) < 2:
        return events
    broken = events[1].rstrip(b"\n")
    return [events[0], broken[: len(broken) // 2] + b"\n\n", *events[2:]]


async def send_events(
    request: web.Request,
    events: Sequence[bytes],
    step: ScriptStep,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    """Stream `events`; with `cut_after`, break the connection before the terminal event."""
    response = web.StreamResponse(status=step.status, headers={**SSE_HEADERS, **headers})
    try:
        await response.prepare(request)
        if step.ttfb_s > 0:
            await asyncio.sleep(step.ttfb_s)
        if step.cut_after is None:
            await _write(response, events, step.chunk_delay_s)
            return response
        # The last event is the terminal one; a cut stream never sends it.
        await _write(response, events[: min(step.cut_after, len(events) - 1)], step.chunk_delay_s)
    except ConnectionError:
        return response  # the client left; nothing more to do
    response.force_close()
    if request.transport is not None:
        request.transport.abort()
    return response


async def _write(response: web.StreamResponse, events: Sequence[bytes], delay: float) -> None:
    if delay <= 0:
        # One write: far fewer syscalls, and the framing is identical for the client.
        await response.write(b"".join(events))
        return
    for index, event in enumerate(events):
        if index:
            await asyncio.sleep(delay)
        await response.write(event)

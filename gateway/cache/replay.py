"""Serve a stored answer: as one JSON body, or as SSE in the dialect's chunk format.

The response is built fresh from the entry, so it never carries the original answer's
framing headers (Content-Length, Transfer-Encoding) or the provider's per-call headers.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.cache.entries import Entry
from gateway.cache.replay_anthropic import message_events
from gateway.cache.replay_openai import chat_chunks, completion_chunks

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache"}


def streams(entry: Entry) -> bool:
    """Whether the entry's endpoint has a stream form (embeddings do not)."""
    return entry.kind != "embedding"


def sse_body(entry: Entry, include_usage: bool) -> bytes:
    """The whole stream at once: a replay has nothing to wait for."""
    body = orjson.loads(entry.body)
    if entry.kind == "message":
        return b"".join(
            b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
            for name, data in message_events(body)
        )
    render = chat_chunks if entry.kind == "chat" else completion_chunks
    events = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in render(body, include_usage)]
    return b"".join(events) + DONE


def respond(entry: Entry, *, stream: bool, include_usage: bool) -> web.Response:
    if stream and streams(entry):
        return web.Response(
            body=sse_body(entry, include_usage),
            content_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    return web.Response(body=entry.body, content_type="application/json")

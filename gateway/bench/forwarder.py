"""The floor: a bare aiohttp forwarder (read the body, POST it upstream, return the answer).

`python -m gateway.bench.forwarder --port 18081 --upstream http://127.0.0.1:19090 --api-key K`
It does what any Python proxy must do and nothing more, so the gateway's cost is measured
against it in the same run. Streams are relayed chunk by chunk, for the streaming phase.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
API_KEY = web.AppKey("api_key", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
_PASSED = (
    "Content-Type",
    "x-mock-latency-ms",
    "x-mock-reply",
    "x-mock-ttfb-ms",
    "x-mock-chunk-delay-ms",
)


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {name: request.headers[name] for name in _PASSED if name in request.headers}
    headers["Authorization"] = f"Bearer {request.app[API_KEY]}"
    url = request.app[UPSTREAM] + request.path_qs
    async with request.app[SESSION].post(url, data=body, headers=headers) as upstream:
        content_type = upstream.headers.get("Content-Type", "application/json")
        if not content_type.startswith("text/event-stream"):
            answer = await upstream.read()
            return web.Response(body=answer, status=upstream.status, content_type=content_type)
        response = web.StreamResponse(status=upstream.status)
        response.content_type = "text/event-stream"
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def _session(app: web.Application) -> AsyncIterator[None]:
    """One pooled session with keep-alive, as any sensible forwarder would have."""
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app[SESSION].close()


def create_forwarder(upstream: str, api_key: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM], app[API_KEY] = upstream.rstrip("/"), api_key
    app.cleanup_ctx.append(_session)
    app.router.add_post("/{tail:.*}", forward)
    return app


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop, as the gateway itself runs."""
    import uvloop

    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.forwarder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the provider's base URL")
    parser.add_argument("--api-key", required=True, help="the provider key to send")
    args = parser.parse_args(argv)
    web.run_app(
        create_forwarder(args.upstream, args.api_key),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        loop=new_event_loop(),
    )


if __name__ == "__main__":
    main()

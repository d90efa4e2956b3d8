"""A gateway served in the test's process the way `gateway serve` serves it: its runner (parser
limits, header deadline, JSON refusals), its sites (a separate admin address included), on
loopback ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.app import create_app
from gateway.config import parse_config
from gateway.serve import runner_for
from gateway.sites import start_sites
from tests.conftest import base_config
from tests.processes import free_port


@dataclass(frozen=True)
class Served:
    url: str
    port: int
    app: web.Application


@asynccontextmanager
async def serve_gateway(mock_url: str, **sections: Any) -> AsyncIterator[Served]:
    port = free_port()
    server = {**sections.pop("server", {}), "host": "127.0.0.1", "port": port}
    config = parse_config(base_config(mock_url, server=server, **sections), "<test>")
    app = create_app(config)
    runner = runner_for(app, config.server)
    await runner.setup()
    try:
        await start_sites(runner, config)
        yield Served(f"http://127.0.0.1:{port}", port, app)
    finally:
        await runner.cleanup()


async def raw_exchange(port: int, data: bytes, timeout_s: float = 5.0) -> bytes:
    """Send bytes as they are (no client-side validation) and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            head = await reader.readuntil(b"\r\n\r\n")
            length = _content_length(head)
            body = await reader.readexactly(length) if length is not None else b""
        return head + body
    finally:
        writer.close()


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])

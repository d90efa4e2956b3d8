"""Redis unreachable, gone mid-test, or hanging: the cache fails open, quickly, and counts it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.cache.state import cache_stats
from gateway.mock import MockState
from gateway.routes import STORE
from tests.integration.test_cache import MakeGateway, cache_config, chat, post

R = TypeVar("R", bound="TcpRelay")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# Sees each chunk a relay carries; False stops the copy.
Check = Callable[[bytes], Awaitable[bool]]


class TcpRelay:
    """A TCP relay in front of a server, which a test can cut like a stopped Redis."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]
        for link in self._links(reader, writer, up_reader, up_writer):
            task = asyncio.create_task(link)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _links(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> list[Coroutine[Any, Any, None]]:
        """What carries the bytes each way: commands up, replies down."""
        return [self._pipe(reader, up_writer), self._pipe(up_reader, writer)]

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, check: Check | None = None
    ) -> None:
        """Copy `src` to `dst`; `check` sees each chunk first and may stop the copy."""
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                if check is not None and not await check(data):
                    break
                dst.write(data)
                await dst.drain()
        dst.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def relaying(relay: R) -> AsyncIterator[R]:
    """`relay` running, stopped afterwards."""
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


def redis_address(redis_url: str) -> tuple[str, int]:
    parts = urlsplit(redis_url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


@pytest.fixture
async def relay(redis_url: str) -> AsyncIterator[TcpRelay]:
    async with relaying(TcpRelay(*redis_address(redis_url))) as running:
        yield running


async def test_redis_on_a_closed_port_fails_open_and_counts_errors(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await make_gateway(**cache_config(f"redis://127.0.0.1:{closed_port()}/13"))
    for _ in range(3):
        started = time.monotonic()
        resp, _ = await post(gateway, chat())
        assert resp.status == 200
        assert resp.headers["x-gateway-cache"] == "MISS"
        assert time.monotonic() - started < 1.5
    assert len(mock.requests) == 3
    assert cache_stats(gateway.server.app).errors >= 1


async def test_redis_stopped_mid_test_requests_still_succeed(
    make_gateway: MakeGateway, relay: TcpRelay, mock: MockState
) -> None:
    gateway = await make_gateway(**cache_config(f"redis://127.0.0.1:{relay.port}/13"))
    await post(gateway, chat())
    hit, _ = await post(gateway, chat())
    assert hit.headers["x-gateway-cache"] == "HIT"
    await relay.stop()
    for _ in range(2):
        resp, body = await post(gateway, chat())
        assert resp.status == 200
        assert resp.headers["x-gateway-cache"] == "MISS"
        assert b"Mock answer: Hello" in body
    assert len(mock.requests) == 3
    assert cache_stats(gateway.server.app).errors >= 1


async def test_failing_store_mid_test_fails_open(
    make_gateway: MakeGateway, store_url: str, mock: MockState, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await make_gateway(**cache_config(store_url))
    await post(gateway, chat())
    store = gateway.server.app[STORE]
    original = store.execute_command

    async def failing(*args: Any, **options: Any) -> Any:
        if any(isinstance(a, str) and a.startswith("gw:cache:") for a in args):
            raise RedisConnectionError("Connection closed by server.")
        return await original(*args, **options)

    monkeypatch.setattr(store, "execute_command", failing)
    resp, _ = await post(gateway, chat())
    assert (resp.status, resp.headers["x-gateway-cache"]) == (200, "MISS")
    assert len(mock.requests) == 2
    assert cache_stats(gateway.server.app).errors == 1


@pytest.fixture
async def hanging_redis() -> AsyncIterator[int]:
    """Accepts connections and reads commands, but never answers."""
    held: list[tuple[asyncio.Task[Any] | None, asyncio.StreamWriter]] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append((asyncio.current_task(), writer))
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    for task, writer in held:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
    await server.wait_closed()


async def test_hanging_redis_costs_at_most_one_short_timeout(
    make_gateway: MakeGateway, hanging_redis: int, mock: MockState
) -> None:
    gateway = await make_gateway(**cache_config(f"redis://127.0.0.1:{hanging_redis}/13"))
    started = time.monotonic()
    first, _ = await post(gateway, chat())
    assert time.monotonic() - started < 1.5
    second, _ = await post(gateway, chat())
    for resp in (first, second):
        assert (resp.status, resp.headers["x-gateway-cache"]) == (200, "MISS")
    # One timed-out lookup; then, while Redis is known to be failing, the cache leaves it
    # alone (the first answer's store and the second request's lookup were skipped).
    assert cache_stats(gateway.server.app).errors == 1
    assert len(mock.requests) == 2

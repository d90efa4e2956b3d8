"""The coalesced store client's one connection: written as commands come, answered in order,
re-sent once after a dropped connection, failed fast when the store is stuck (and not when
the gateway's own event loop was held up)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvloop
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError

from gateway.serve import new_event_loop
from gateway.store import COMMAND_TIMEOUT_S, open_store
from gateway.store_guard import StoreBreaker, StoreCircuitOpen, guard_store
from tests.faults.test_store_breaker import give_up_after_a_held_up_loop
from tests.integration.test_cache_redis_failures import TcpRelay, redis_address, relaying
from tests.integration.test_store_coalesce import count_round_trips

pytestmark = pytest.mark.redis


class Relay(TcpRelay):
    """A TCP relay in front of Redis that a test can make drop a connection when a command
    names a key of its choosing (before Redis sees it), or stop answering."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.cuts = 0  # drop this many connections, each on a command naming `cut_key`
        self.cut_key = b"n"
        self.frozen = False  # hold every reply back
        self.connections = 0

    def _links(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> list[Coroutine[Any, Any, None]]:
        self.connections += 1

        async def command(data: bytes) -> bool:
            if self.cuts > 0 and b"\r\n" + self.cut_key + b"\r\n" in data:
                self.cuts -= 1
                writer.transport.abort()  # the command never reaches Redis
                return False
            return True

        return [self._pipe(reader, up_writer, command), self._pipe(up_reader, writer, self._reply)]

    async def _reply(self, data: bytes) -> bool:
        while self.frozen:
            await asyncio.sleep(0.01)
        return True


@pytest.fixture
async def relay(redis_url: str) -> AsyncIterator[Relay]:
    async with relaying(Relay(*redis_address(redis_url))) as running:
        yield running


def relayed(relay: Relay, redis_url: str) -> Redis:
    """A coalesced store client of the tests' database, through the relay."""
    db = urlsplit(redis_url).path.lstrip("/") or "0"
    client: Redis = open_store(f"redis://127.0.0.1:{relay.port}/{db}")  # type: ignore[assignment]
    return client


@pytest.fixture
async def store(relay: Relay, redis_url: str) -> AsyncIterator[Redis]:
    client = relayed(relay, redis_url)
    await client.delete("n")
    yield client
    await client.aclose()


async def test_a_dropped_connection_is_replaced_and_its_commands_sent_again(
    store: Redis, relay: Relay
) -> None:
    relay.cuts = 1
    assert await store.incr("n") == 1  # answered on a second connection
    assert relay.connections == 2
    assert await store.get("n") == b"1"  # and run once: the first never reached Redis


async def test_commands_are_sent_again_only_once(store: Redis, relay: Relay) -> None:
    relay.cuts = 2
    with pytest.raises(RedisConnectionError):
        await store.incr("n")
    assert await store.incr("n") == 1  # a new connection for the next command


async def test_a_stuck_store_fails_its_callers_at_the_timeout_and_is_left(
    store: Redis, relay: Relay
) -> None:
    await store.ping()
    relay.frozen = True
    began = time.monotonic()
    results = await asyncio.gather(store.incr("n"), store.get("n"), return_exceptions=True)
    waited = time.monotonic() - began
    assert all(isinstance(r, TimeoutError) for r in results)
    assert COMMAND_TIMEOUT_S * 0.9 <= waited < COMMAND_TIMEOUT_S + 1
    relay.frozen = False
    assert await store.get("n") == b"1"  # a new connection; the stuck one is gone
    assert relay.connections == 2


class SlowClockLoop(uvloop.Loop):  # type: ignore[misc]
    """The gateway's loop on a busy machine: its thread set aside between two readings of
    the clock, each reading taking over a millisecond (uvloop's clock counts milliseconds)."""

    def time(self) -> float:
        time.sleep(0.0012)
        reading: float = super().time()
        return reading


@pytest.mark.parametrize("held_in", ["a callback", "a read's callback"])
@pytest.mark.parametrize(
    "make_loop",
    [new_event_loop, SlowClockLoop, asyncio.new_event_loop],
    ids=["gateway-loop", "gateway-loop-busy", "asyncio-loop"],
)
async def test_a_held_up_event_loop_does_not_make_the_store_look_stuck(
    relay: Relay, redis_url: str, make_loop: Callable[[], asyncio.AbstractEventLoop], held_in: str
) -> None:
    """The gateway's own event loop held up past the command timeout (a long callback, a
    paused machine) while the store's reply comes in: the reply reaches its caller, on the
    same connection, whether the loop was held in a callback or while reading another
    socket (uvloop reads before it runs its timers, and runs them before the next read)."""
    held_s = COMMAND_TIMEOUT_S * 1.5

    async def held_up() -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        store = relayed(relay, redis_url)
        ours, other = socket.socketpair()
        ours.setblocking(False)

        def hold_up() -> None:
            ours.recv(1)
            time.sleep(held_s)

        loop.add_reader(ours.fileno(), hold_up)
        try:
            await store.set("n", 1)
            waiting = asyncio.ensure_future(store.incr("n"))
            await asyncio.sleep(0)  # the command leaves
            if held_in == "a callback":
                time.sleep(held_s)  # the loop held up, on purpose
            else:
                other.send(b"x")  # read on the loop's next pass, before the reply comes
            return await waiting, await store.get("n")
        finally:
            loop.remove_reader(ours.fileno())
            ours.close()
            other.close()
            await store.delete("n")
            await store.aclose()

    def run() -> tuple[Any, Any]:
        loop = make_loop()
        try:
            return loop.run_until_complete(held_up())
        finally:
            loop.close()

    # On a thread with its own loop: the relay goes on running on this one.
    assert await asyncio.to_thread(run) == (2, b"2")
    assert relay.connections == 1  # the connection was kept


async def test_callers_gone_after_a_held_up_loop_leave_the_store_breaker_closed(
    redis_url: str,
) -> None:
    """Clients that leave while the gateway's loop was held up (their requests cancelled long
    after their commands left) say nothing of the store, which answered: its breaker stays
    closed, and the commands ran."""
    breaker = StoreBreaker()
    store = guard_store(open_store(redis_url), breaker)
    try:
        await store.set("n", 0)
        await give_up_after_a_held_up_loop(store, breaker.failures, COMMAND_TIMEOUT_S * 0.75)
        assert breaker.state == "closed"
        assert await store.get("n") == str(breaker.failures).encode()
    finally:
        await store.delete("n")
        await store.aclose()


async def test_a_stuck_store_opens_the_breaker_though_its_callers_gave_up_first(
    relay: Relay, redis_url: str
) -> None:
    """Callers that give up before the command timeout (a short request deadline) still
    let a store that never answers open its breaker, once the connection's timeout passes."""
    breaker = StoreBreaker(failures=1)
    store = guard_store(relayed(relay, redis_url), breaker)
    try:
        await store.ping()
        relay.frozen = True
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(COMMAND_TIMEOUT_S / 10):
                await store.incr("n")
        assert breaker.state == "closed"  # no verdict yet
        await asyncio.sleep(COMMAND_TIMEOUT_S * 2)  # past the connection's timeout
        assert breaker.state == "open"
        assert breaker.last_error == "TimeoutError"
        with pytest.raises(StoreCircuitOpen):  # the store is left alone
            await store.get("n")
    finally:
        relay.frozen = False
        await store.aclose()


async def test_batches_sent_before_earlier_replies_come_back_get_their_own_replies(
    store: Redis, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.ping()
    trips = count_round_trips(monkeypatch)
    relay.frozen = True  # every reply waits, so later batches go out behind earlier ones
    first = asyncio.ensure_future(store.incr("n"))
    await asyncio.sleep(0.02)
    second = asyncio.ensure_future(asyncio.gather(store.incr("n"), store.get("n")))
    await asyncio.sleep(0.02)
    relay.frozen = False
    assert await first == 1
    assert await second == [2, b"2"]
    assert trips == [["INCRBY"], ["INCRBY", "GET"]]
    assert relay.connections == 1


async def test_many_replies_split_across_reads_reach_their_callers(store: Redis) -> None:
    values = [f"v{i}-" + "x" * (i % 300) for i in range(2000)]
    await asyncio.gather(*(store.set(f"k{i}", v) for i, v in enumerate(values)))
    try:
        got = await asyncio.gather(*(store.get(f"k{i}") for i in range(len(values))))
    finally:
        await store.delete(*(f"k{i}" for i in range(len(values))))
    assert got == [v.encode() for v in values]


async def test_a_value_that_cannot_be_sent_fails_its_caller_alone(store: Redis) -> None:
    bad, good = await asyncio.gather(
        store.set("n", True),  # type: ignore[arg-type]  # what redis-py refuses
        store.incr("n"),
        return_exceptions=True,
    )
    assert isinstance(bad, DataError)
    assert good == 1


async def test_closing_the_client_fails_its_waiting_callers_at_once(
    store: Redis, relay: Relay
) -> None:
    await store.ping()
    relay.frozen = True
    waiting = asyncio.ensure_future(store.incr("n"))
    await asyncio.sleep(0.02)
    began = time.monotonic()
    await store.aclose()
    with pytest.raises(RedisConnectionError):
        await waiting
    assert time.monotonic() - began < COMMAND_TIMEOUT_S / 2
    relay.frozen = False

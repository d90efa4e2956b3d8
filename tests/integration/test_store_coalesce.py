"""The store client: commands issued while others are out share one round trip; its connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError

from gateway.store import open_store
from gateway.store.coalesce import ON_ORPHAN
from gateway.store.resp import pack
from gateway.store.scripts import Script
from gateway.store.wire import Wire

pytestmark = pytest.mark.redis


def count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The commands of every round trip (one write) the coalescer makes: each by its name, a
    script by its SHA."""
    trips: list[list[str]] = []
    send = Wire.send

    def recording(self: Wire, batch: list[Any], deadline: float) -> None:
        trips.append([_name(item.args) for item in batch if not item.future.done()])
        send(self, batch, deadline)

    monkeypatch.setattr(Wire, "send", recording)
    return trips


def _name(args: tuple[Any, ...]) -> str:
    if args[0] == "EVALSHA":
        return str(args[1])
    if args[0] == "EVAL":
        return Script.of(str(args[1])).sha
    return str(args[0])


async def test_commands_issued_while_the_connection_opens_share_one_round_trip(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = count_round_trips(monkeypatch)
    store = open_store(redis_url)
    try:
        results = await asyncio.gather(
            store.set("a", "1"), store.incr("n"), store.get("a"), store.incr("n")
        )
    finally:
        await store.aclose()
    assert results == [True, 1, b"1", 2]  # each caller its own reply, in the order asked
    assert trips == [["SET", "INCRBY", "GET", "INCRBY"]]


async def test_a_command_leaves_at_once_when_none_is_out_and_the_rest_of_its_turn_together(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing in flight, a command is written before the callbacks queued behind its
    caller run; the commands issued while it is out leave together at the turn's end."""
    store = open_store(redis_url)
    try:
        await store.ping()  # the connection is open, and nothing is on it
        trips = count_round_trips(monkeypatch)
        seen: list[int] = []
        first = asyncio.ensure_future(store.set("a", "1"))
        second = asyncio.ensure_future(store.incr("n"))
        asyncio.get_running_loop().call_soon(lambda: seen.append(len(trips)))
        third = asyncio.ensure_future(store.get("a"))
        results = await asyncio.gather(first, second, third)
    finally:
        await store.aclose()
    assert results == [True, 1, b"1"]
    assert seen == [1]  # the SET was out before the callback queued after its caller ran
    assert trips == [["SET"], ["INCRBY", "GET"]]


class _Refusing:
    """A transport that refuses writes, as one closed under its protocol does."""

    def __init__(self, transport: Any) -> None:
        self.inner = transport

    def write(self, data: bytes) -> None:
        raise RuntimeError("unable to perform operation: the handler is closed")

    def is_closing(self) -> bool:
        return bool(self.inner.is_closing())

    def abort(self) -> None:
        self.inner.abort()


async def test_a_batch_its_connection_refuses_is_sent_again_on_a_new_one(redis_url: str) -> None:
    store = open_store(redis_url)
    try:
        await store.ping()
        coalescer = store.execute_command.__self__  # type: ignore[attr-defined]
        broken = coalescer._wire
        broken.transport = _Refusing(broken.transport)
        assert await store.set("a", "1") is True  # the caller sees no error
        assert coalescer._wire is not broken
        assert await store.get("a") == b"1"
    finally:
        await store.aclose()


async def test_sequential_commands_each_make_their_own_round_trip(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = count_round_trips(monkeypatch)
    store = open_store(redis_url)
    try:
        await store.set("a", "1")
        assert await store.get("a") == b"1"
    finally:
        await store.aclose()
    assert trips == [["SET"], ["GET"]]


async def test_a_commands_error_reaches_its_caller_alone(redis_url: str) -> None:
    store = open_store(redis_url)
    try:
        await store.set("text", "not a number")
        bad, good, script = await asyncio.gather(
            store.incr("text"),
            store.incr("n"),
            store.evalsha("0" * 40, 0),
            return_exceptions=True,
        )
    finally:
        await store.aclose()
    assert isinstance(bad, ResponseError)
    assert good == 1
    assert isinstance(script, NoScriptError)  # callers load the script and try again


async def test_scripts_registered_on_the_client_run_through_it(redis_url: str) -> None:
    store = open_store(redis_url)
    try:
        script = store.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        results = await asyncio.gather(script(keys=["s"], args=[2]), script(keys=["s"], args=[3]))
    finally:
        await store.aclose()
    assert sorted(results) == [2, 5]


async def test_an_unreachable_store_fails_every_caller_quickly() -> None:
    store = open_store("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        async with asyncio.timeout(5):
            results = await asyncio.gather(store.get("a"), store.get("b"), return_exceptions=True)
    finally:
        await store.aclose()
    assert all(isinstance(r, RedisConnectionError) for r in results)
    assert results[0] is not results[1]  # each caller its own exception


async def test_a_caller_that_gives_up_leaves_the_others_their_replies(redis_url: str) -> None:
    store = open_store(redis_url)
    try:
        gone = asyncio.ensure_future(store.set("gone", "1"))
        kept = asyncio.ensure_future(store.set("kept", "1"))
        gone.cancel()
        assert await kept is True
        with pytest.raises(asyncio.CancelledError):
            await gone
    finally:
        await store.aclose()


async def _orphaned_call(store: Any, orphans: list[Any], command: Any) -> Any:
    keep = ON_ORPHAN.set(orphans.append)
    try:
        return await command()
    finally:
        ON_ORPHAN.reset(keep)


async def test_a_caller_gone_hands_its_reply_to_its_orphan_function(redis_url: str) -> None:
    """Whether it left before its command was sent or while it waited for the reply: its
    command runs, and its ON_ORPHAN function gets the reply (or the error reply), once; a
    caller without one that left before its command was sent is dropped, as before."""
    store = open_store(redis_url)
    orphans: list[Any] = []
    try:
        await store.delete("o1", "o2", "o3", "dropped")
        before = asyncio.ensure_future(_orphaned_call(store, orphans, lambda: store.incr("o1")))
        dropped = asyncio.ensure_future(store.incr("dropped"))
        await asyncio.sleep(0)  # both queued, not yet sent
        before.cancel()
        dropped.cancel()
        waiting = asyncio.ensure_future(_orphaned_call(store, orphans, lambda: store.incr("o2")))
        await asyncio.sleep(0)  # queued
        await asyncio.sleep(0)  # sent, its reply not yet read
        waiting.cancel()
        failing = asyncio.ensure_future(
            _orphaned_call(store, orphans, lambda: store.execute_command("HGET", "o3"))
        )
        await asyncio.sleep(0)
        failing.cancel()
        for task in (before, dropped, waiting, failing):
            with pytest.raises(asyncio.CancelledError):
                await task
        async with asyncio.timeout(5):
            while len(orphans) < 3:
                await asyncio.sleep(0.01)
        assert await store.mget(["o1", "o2", "dropped"]) == [b"1", b"1", None]
    finally:
        await store.aclose()
    assert orphans[:2] == [1, 1]
    assert isinstance(orphans[2], ResponseError)  # wrong number of arguments


async def test_blocking_commands_are_sent_alone(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = count_round_trips(monkeypatch)
    store: Redis = open_store(redis_url)  # type: ignore[assignment]  # a plain Redis URL
    try:
        await store.rpush("q", "x")
        assert await store.blpop(["q"], timeout=1) == (b"q", b"x")
    finally:
        await store.aclose()
    assert trips == [["RPUSH"]]


@pytest.mark.parametrize(
    "command",
    [
        ("EVALSHA", "a" * 40, 1, "k", 12, -3, 1.5, b"x\r\n", "é"),
        ("SCRIPT LOAD", "return 1"),
        (b"CONFIG GET", "maxmemory"),
        ("XADD", "s", "MAXLEN", "~", 1000, "*", "j", memoryview(b"abc")),
        ("SET", "k", 0.1),
    ],
)
def test_pack_encodes_as_redis_py_does(command: tuple[Any, ...]) -> None:
    conn = Connection()
    assert pack([command], conn.encoder) == b"".join(conn.pack_command(*command))


def test_pack_refuses_what_redis_py_refuses() -> None:
    with pytest.raises(DataError):
        pack([("SET", "k", True)], Connection().encoder)

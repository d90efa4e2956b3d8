"""The store's circuit breaker and the guard around the store client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from gateway.store import Store, open_store
from gateway.store_guard import HARD_TIMEOUT_S, StoreBreaker, StoreCircuitOpen, guard_store
from tests.processes import RedisClusterNodes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """Answers or fails as told, each command after its delay (`delays`, by name, or
    `delay_s`); records the commands that reached it."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.fail: BaseException | None = None
        self.delay_s = 0.0
        self.delays: dict[str, float] = {}
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True

    @property
    def sent(self) -> int:
        return len(self.commands)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(args[0])
        delay = self.delays.get(args[0], self.delay_s)
        if delay:
            await asyncio.sleep(delay)
        if self.fail is not None:
            raise self.fail
        return b"PONG"


def _guarded(breaker: StoreBreaker) -> FakeStore:
    store = FakeStore()
    guard_store(store, breaker, limit_retries=False)  # type: ignore[arg-type]
    return store


def test_breaker_opens_after_consecutive_failures_then_probes_once_after_its_open_time() -> None:
    clock = Clock()
    changes: list[str] = []
    breaker = StoreBreaker(failures=3, open_s=5, clock=clock, on_change=changes.append)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed("TimeoutError")
    assert breaker.state == "closed"
    breaker.failed("TimeoutError")
    assert (breaker.state, changes) == ("open", ["open"])
    assert not breaker.allow()
    clock.now += 5
    assert breaker.state == "half_open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # one at a time
    breaker.succeeded()
    assert (breaker.state, changes) == ("closed", ["open", "closed"])


def test_failed_probe_opens_the_breaker_for_another_period() -> None:
    clock = Clock()
    breaker = StoreBreaker(failures=1, open_s=5, clock=clock)
    breaker.failed("ConnectionError")
    clock.now += 5
    assert breaker.allow()
    breaker.failed("ConnectionError")
    assert breaker.state == "open"
    assert breaker.retry_in_s() == 5


async def test_open_breaker_fails_commands_at_once_without_asking_the_store() -> None:
    breaker = StoreBreaker(failures=2, open_s=60)
    store = _guarded(breaker)
    store.fail = RedisConnectionError("refused")
    for _ in range(2):
        with pytest.raises(RedisConnectionError):
            await store.execute_command("PING")
    with pytest.raises(StoreCircuitOpen, match="ConnectionError"):
        await store.execute_command("PING")
    assert store.sent == 2


async def test_a_refused_command_is_an_answer_and_keeps_the_breaker_closed() -> None:
    breaker = StoreBreaker(failures=1)
    store = _guarded(breaker)
    store.fail = NoScriptError("NOSCRIPT")  # a script cache miss: the store is up
    with pytest.raises(NoScriptError):
        await store.execute_command("EVALSHA")
    assert breaker.state == "closed"


async def _give_up_on_a_stuck_store(breaker: StoreBreaker) -> FakeStore:
    """A store that answers nothing for 10 s, and a caller that gives up after 0.05 s."""
    store = _guarded(breaker)
    store.delay_s = 10
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await store.execute_command("XADD")
    return store


async def test_a_store_that_never_answers_opens_the_breaker_though_its_caller_gave_up() -> None:
    """A caller that gives up is no verdict: the store is asked, and its PING times out."""
    breaker = StoreBreaker(failures=1)
    store = await _give_up_on_a_stuck_store(breaker)
    assert breaker.state == "closed"  # not yet: the PING is out
    await asyncio.sleep(HARD_TIMEOUT_S * 1.5)
    assert (breaker.state, breaker.last_error) == ("open", "TimeoutError")
    assert store.commands == ["XADD", "PING"]


async def test_closing_the_store_cancels_the_ping_left_by_a_caller_that_gave_up() -> None:
    """The client closes at once, and no PING of the guard's outlives it (to fail later on
    a closed client, or be destroyed pending with its loop)."""
    breaker = StoreBreaker(failures=1)
    store = await _give_up_on_a_stuck_store(breaker)
    await asyncio.sleep(0)  # the PING's task starts
    assert store.commands == ["XADD", "PING"]
    async with asyncio.timeout(HARD_TIMEOUT_S / 4):
        await store.aclose()
    assert store.closed
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert (breaker.state, breaker.consecutive) == ("closed", 0)


async def test_callers_that_give_up_on_a_store_that_answers_leave_the_breaker_closed() -> None:
    """Callers cancelled long after their commands left (their clients gone after the
    gateway's loop was held up) say nothing of the store, which answers the PING; the three
    share one."""
    breaker = StoreBreaker(failures=1)
    store = _guarded(breaker)
    store.delays = {"XADD": 10}
    callers = [asyncio.ensure_future(store.execute_command("XADD")) for _ in range(3)]
    await asyncio.sleep(HARD_TIMEOUT_S / 2)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    await asyncio.sleep(0.05)  # the PING's answer
    assert (breaker.state, breaker.consecutive) == ("closed", 0)
    assert store.commands == ["XADD", "XADD", "XADD", "PING"]


async def test_a_command_that_hangs_is_cut_by_the_guard() -> None:
    breaker = StoreBreaker(failures=5)
    store = _guarded(breaker)
    store.delay_s = 10
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await store.execute_command("EVALSHA")
    assert asyncio.get_running_loop().time() - started < 1.5
    assert breaker.consecutive == 1


async def give_up_after_a_held_up_loop(store: Store, callers: int, held_s: float) -> None:
    """`callers` INCRs of "n" leave; the loop is held up for `held_s` while the replies come
    in; then their clients go (their requests cancelled)."""
    waiting = [asyncio.ensure_future(store.incr("n")) for _ in range(callers)]
    for _ in range(2):
        await asyncio.sleep(0)  # the commands leave
    time.sleep(held_s)
    for caller in waiting:
        caller.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_callers_gone_after_a_held_up_loop_leave_a_redis_cluster_breaker_closed(
    redis_cluster: RedisClusterNodes,
) -> None:
    """On a Redis Cluster (whose client cancels a command with its caller): clients that
    leave while the gateway's loop was held up say nothing of the store, which answered."""
    changes: list[str] = []
    breaker = StoreBreaker(on_change=changes.append)
    store = guard_store(open_store(redis_cluster.url), breaker)
    try:
        await store.set("n", 0)
        await give_up_after_a_held_up_loop(store, breaker.failures + 2, HARD_TIMEOUT_S * 0.4)
        await asyncio.sleep(HARD_TIMEOUT_S / 4)  # the PING's answer
        assert (breaker.state, breaker.consecutive, changes) == ("closed", 0, [])
        assert await store.get("n") is not None  # and the store serves on
    finally:
        await store.aclose()


async def test_a_stuck_redis_cluster_opens_the_breaker_though_its_callers_gave_up_first(
    redis_cluster: RedisClusterNodes,
) -> None:
    """Callers that give up early (a short request deadline) still let a cluster whose nodes
    stopped answering open the breaker: the PING they leave behind times out."""
    breaker = StoreBreaker(failures=1)
    store = guard_store(open_store(redis_cluster.url), breaker)
    try:
        await store.ping()
        redis_cluster.freeze()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await store.incr("n")
        assert breaker.state == "closed"  # no verdict yet
        await asyncio.sleep(HARD_TIMEOUT_S * 2)
        assert breaker.state == "open"
        with pytest.raises(StoreCircuitOpen):  # the store is left alone
            await store.get("n")
    finally:
        redis_cluster.thaw()
        await store.aclose()

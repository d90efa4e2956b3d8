"""The store's circuit breaker and the guard around the store client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from gateway.store_guard import StoreBreaker, StoreCircuitOpen, guard_store


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """Answers or fails as told; counts the commands that reached it."""

    def __init__(self) -> None:
        self.sent = 0
        self.fail: BaseException | None = None
        self.delay_s = 0.0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
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


async def test_a_command_the_caller_abandons_after_a_while_counts_as_a_failure() -> None:
    breaker = StoreBreaker(failures=1)
    store = _guarded(breaker)
    store.delay_s = 10
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await store.execute_command("XADD")
    assert breaker.state == "open"


async def test_a_command_that_hangs_is_cut_by_the_guard() -> None:
    breaker = StoreBreaker(failures=5)
    store = _guarded(breaker)
    store.delay_s = 10
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await store.execute_command("EVALSHA")
    assert asyncio.get_running_loop().time() - started < 1.5
    assert breaker.consecutive == 1

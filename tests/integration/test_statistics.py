"""Month-to-date statistics: summed in the process, sent in one command per flush, read fresh,
kept through a store outage, and sent at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from gateway.accounting import local_periods
from gateway.drain import DRAIN
from gateway.store import open_store
from gateway.store.accounting import (
    ACCOUNTING,
    PREFIX,
    Accounting,
    Scope,
    StatFields,
    StoreUnavailable,
)
from gateway.store.scripts import Script
from gateway.store.wire import Wire
from tests.conftest import KEY_A

Client = TestClient[Any, Any]
MakeGateway = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {KEY_A}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
STATS_ADD = Script.load("gateway.store", "lua/stats_add.lua")
ONE = StatFields(prefixes=("all", "k:a"), values={"requests": 1, "cost": 5})

pytestmark = pytest.mark.redis


async def test_statistics_of_many_requests_go_in_one_command_and_are_read_fresh(
    make_gateway: MakeGateway, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await make_gateway(storage={"url": redis_url})
    accounting = gateway.app[ACCOUNTING]
    sent: list[tuple[Any, ...]] = []
    send = Wire.send

    def recording(self: Wire, batch: list[Any], deadline: float) -> None:
        sent.extend(item.args for item in batch)
        send(self, batch, deadline)

    monkeypatch.setattr(Wire, "send", recording)
    for _ in range(5):
        assert (await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)).status == 200
    assert await gateway.app[DRAIN].wait_idle(5)
    stats_adds = [args for args in sent if args[:2] == ("EVALSHA", STATS_ADD.sha)]
    assert stats_adds == []  # summed in the process so far
    stats = await accounting.stats(local_periods()[1])  # sends what this process summed
    assert stats["all:requests"] == 5
    assert stats["k:team-a:requests"] == 5
    assert stats["r:chat:requests"] == 5
    assert stats["all:tokens"] > 0
    stats_adds = [args for args in sent if args[:2] == ("EVALSHA", STATS_ADD.sha)]
    assert len(stats_adds) == 1  # the five requests' statistics, in one command
    assert (await accounting.stats(local_periods()[1]))["all:requests"] == 5  # sent once


async def test_statistics_wait_out_a_store_outage(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(redis_url)
    accounting = Accounting(store)
    try:
        accounting.count("202611", ONE)

        async def store_out(*args: Any) -> Any:
            raise StoreUnavailable("ConnectionError: down")

        with monkeypatch.context() as patched:
            patched.setattr(accounting, "_run", store_out)
            await accounting.flush_stats()  # fails: kept for the next try
        accounting.count("202611", ONE)
        stats = await accounting.stats("202611")
    finally:
        await store.aclose()
    assert stats == {"all:requests": 2, "all:cost": 10, "k:a:requests": 2, "k:a:cost": 10}


async def test_statistics_summed_before_shutdown_reach_the_store(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    gateway = await make_gateway(storage={"url": redis_url})
    for _ in range(3):
        assert (await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)).status == 200
    await gateway.close()  # the app's cleanup: statistics first, then the store
    reader = Redis.from_url(redis_url)
    try:
        raw = await reader.hget(f"{PREFIX}stats:{local_periods()[1]}", "all:requests")
    finally:
        await reader.aclose()
    assert raw == b"3"


async def test_spend_owed_while_an_earlier_sum_is_being_charged_is_charged_too(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request served unchecked settles while the sum owed before it is on its way to the
    store: its cost is a new sum, charged by the next flush, not dropped with the first."""
    store = open_store(redis_url)
    accounting = Accounting(store)
    scopes = (Scope("k:a", "key 'a'", None, 10**9, None),)
    period = ("20261129", "202611")
    settle = accounting.settle
    on_its_way = asyncio.Event()
    go_on = asyncio.Event()

    async def slow_settle(*args: Any, **kwargs: Any) -> Any:
        on_its_way.set()
        await go_on.wait()
        return await settle(*args, **kwargs)

    try:
        assert accounting.admit_unchecked("a", 500, 10_000)
        accounting.owe("a", scopes, period, (300, 7), 500)
        monkeypatch.setattr(accounting, "settle", slow_settle)
        flushing = asyncio.ensure_future(accounting.flush_stats())
        await on_its_way.wait()
        assert accounting.admit_unchecked("a", 500, 10_000)
        accounting.owe("a", scopes, period, (200, 3), 500)  # while the first sum is out
        go_on.set()
        await flushing
        await accounting.flush_stats()
        spent = await accounting.read(["spent:k:a:m202611", "tokens:k:a:m202611"])
    finally:
        await store.flushdb()
        await store.aclose()
    assert spent == [500, 10]
    assert accounting.unchecked == {}  # all charged: the allowance is whole again

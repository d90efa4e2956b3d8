"""Single-flight: identical concurrent requests share one upstream call, in one process and
across replicas; a leader's failure is never handed on as an answer."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.cache.keys import partition, request_digest
from gateway.cache.storage import entry_key, lock_key
from gateway.mock import MockState, ScriptStep
from gateway.routes import STORE
from gateway.stages import cache as cache_stage
from tests.integration.test_cache import (
    A,
    Client,
    MakeGateway,
    cache_config,
    chat,
    post,
    streamed_text,
)

SLOW = {**A, "x-mock-latency-ms": "300"}


@pytest.fixture
async def gateway(make_gateway: MakeGateway, store_url: str) -> Client:
    return await make_gateway(**cache_config(store_url))


async def test_100_concurrent_identical_requests_make_one_upstream_call(
    gateway: Client, mock: MockState
) -> None:
    results = await asyncio.gather(*(post(gateway, chat(), SLOW) for _ in range(100)))
    statuses = sorted(resp.headers["x-gateway-cache"] for resp, _ in results)
    assert {resp.status for resp, _ in results} == {200}
    assert len({body for _, body in results}) == 1
    assert statuses == ["HIT"] * 99 + ["MISS"]
    assert len(mock.requests) == 1


async def test_concurrent_streams_share_one_upstream_call(gateway: Client, mock: MockState) -> None:
    results = await asyncio.gather(*(post(gateway, chat(stream=True), SLOW) for _ in range(20)))
    assert {streamed_text(body) for _, body in results} == {"Mock answer: Hello"}
    assert len(mock.requests) == 1


async def test_leaders_failure_is_not_handed_to_followers(gateway: Client, mock: MockState) -> None:
    mock.push([ScriptStep(status=500, latency_s=0.3)])
    leader = asyncio.create_task(post(gateway, chat()))
    await asyncio.sleep(0.1)  # the leader's call is under way
    followers = await asyncio.gather(*(post(gateway, chat()) for _ in range(5)))
    failed, _ = await leader
    assert failed.status >= 500
    assert {resp.status for resp, _ in followers} == {200}
    assert len(mock.requests) == 6  # each follower went upstream itself


async def test_another_replica_waits_for_the_leaders_entry(
    make_gateway: MakeGateway, redis_url: str, mock: MockState
) -> None:
    first = await make_gateway(**cache_config(redis_url))
    second = await make_gateway(**cache_config(redis_url))
    leader = asyncio.create_task(post(first, chat(), SLOW))
    await asyncio.sleep(0.1)
    follower, follower_body = await post(second, chat())
    led, led_body = await leader
    assert (led.headers["x-gateway-cache"], follower.headers["x-gateway-cache"]) == ("MISS", "HIT")
    assert follower_body == led_body
    assert len(mock.requests) == 1


async def test_another_replica_goes_upstream_itself_when_the_leader_fails(
    make_gateway: MakeGateway, redis_url: str, mock: MockState
) -> None:
    first = await make_gateway(**cache_config(redis_url))
    second = await make_gateway(**cache_config(redis_url))
    mock.push([ScriptStep(status=500, latency_s=0.3)])
    leader = asyncio.create_task(post(first, chat()))
    await asyncio.sleep(0.1)
    follower, _ = await post(second, chat())
    failed, _ = await leader
    assert failed.status >= 500
    assert (follower.status, follower.headers["x-gateway-cache"]) == (200, "MISS")
    assert len(mock.requests) == 2


async def test_follower_waits_a_bounded_time_for_a_silent_leader(
    make_gateway: MakeGateway, redis_url: str, mock: MockState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_stage, "FOLLOW_WAIT_S", 0.3)
    gateway = await make_gateway(**cache_config(redis_url))
    # A replica took the lock and vanished: the lock would outlive any reasonable wait.
    digest = request_digest(
        payload=chat(),
        provider="openai",
        path="/v1/chat/completions",
        query="",
        headers={},
        partition=partition("team-a", False),
    )
    key = entry_key(partition("team-a", False), digest)
    await gateway.server.app[STORE].set(lock_key(key), "gone", px=60_000)
    started = time.monotonic()
    resp, _ = await post(gateway, chat())
    assert resp.status == 200
    assert resp.headers["x-gateway-cache"] == "MISS"
    assert 0.3 <= time.monotonic() - started < 2
    assert len(mock.requests) == 1


@pytest.mark.parametrize("replicas", [1, 2])
async def test_follower_gets_its_own_deadlines_504_while_the_leader_still_waits(
    make_gateway: MakeGateway, redis_url: str, mock: MockState, replicas: int
) -> None:
    first = await make_gateway(**cache_config(redis_url))
    second = first if replicas == 1 else await make_gateway(**cache_config(redis_url))
    leader = asyncio.create_task(post(first, chat(), {**A, "x-mock-latency-ms": "2000"}))
    await asyncio.sleep(0.1)  # the leader's call is under way
    # The client will wait 0.3 s (as an SDK's timeout says): it gets the gateway's 504,
    # which its SDK does not retry, rather than a wait its SDK times out and retries.
    follower = await second.post(
        "/v1/chat/completions", json=chat(), headers={**A, "x-gateway-timeout": "0.3"}
    )
    error = await follower.json()
    assert not leader.done()
    assert follower.status == 504
    assert error["error"]["code"] == "deadline_exceeded"
    assert follower.headers["x-should-retry"] == "false"
    led, _ = await leader
    assert (led.status, led.headers["x-gateway-cache"]) == (200, "MISS")
    assert len(mock.requests) == 1  # the follower never went upstream

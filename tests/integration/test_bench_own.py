"""The benchmark reads the gateway's own time in a phase from the gateway's request log in the
real store: the answered requests that ended within the phase, nothing else."""

from __future__ import annotations

import asyncio
import statistics
import time

import redis

from gateway.bench.own import own_overhead
from tests.conftest import KEY_A
from tests.integration.test_admin_requests import listed
from tests.integration.test_overhead import CHAT, Client, MakeGateway, gateway_with

PROVIDER_MS = 60


async def post(gateway: Client, key: str = KEY_A) -> int:
    headers = {"Authorization": f"Bearer {key}", "x-mock-latency-ms": str(PROVIDER_MS)}
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=headers)
    await resp.read()
    return resp.status


async def test_the_phase_s_answered_requests_give_the_gateway_s_own_time(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    gateway = await gateway_with(make_gateway, redis_url)
    assert await post(gateway) == 200  # before the phase
    await listed(gateway, want=1)
    await asyncio.sleep(0.01)  # the window's edge lies between two requests
    since = time.time()
    statuses = [await post(gateway) for _ in range(5)]
    statuses.append(await post(gateway, key="not-a-gateway-key"))
    until = time.time()
    await asyncio.sleep(0.01)
    assert await post(gateway) == 200  # after it
    assert statuses == [200] * 5 + [401]
    rows = await listed(gateway, want=8)
    phase = [r for r in rows if since <= r["time"] <= until and r["status"] == 200]
    assert len(phase) == 5

    with redis.Redis.from_url(redis_url) as store:
        own = own_overhead(store, since, until)

    assert own is not None
    assert own.requests == 5
    overheads = sorted(r["overhead_ms"] for r in phase)
    assert own.p50_ms == statistics.median(overheads)  # nearest rank of five: the third
    assert own.p99_ms == overheads[-1]
    assert own.p99_ms < PROVIDER_MS  # the provider's time is not the gateway's
    assert own.store_p50_ms == statistics.median(r["store_ms"] for r in phase)
    assert 0 < own.store_p50_ms <= own.p99_ms  # a budgeted key: its verdict and its bill


async def test_a_phase_without_answered_requests_has_no_figure(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    gateway = await gateway_with(make_gateway, redis_url)
    assert await post(gateway) == 200
    await listed(gateway, want=1)
    with redis.Redis.from_url(redis_url) as store:
        assert own_overhead(store, time.time(), time.time() + 1) is None

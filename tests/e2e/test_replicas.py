"""Several gateway processes on one shared store: budgets and rate limits hold exactly,
on one Redis and on a Redis Cluster, and a killed process's reservations are charged."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from gateway.accounting import local_periods
from gateway.store import open_store
from gateway.store.accounting import Accounting
from tests.conftest import PROVIDER_KEY, sha
from tests.integration import test_limits_cache_round_trip as round_trip
from tests.integration.test_cache import post
from tests.integration.test_limits_cache_round_trip import (
    MakeGateway,
    limited_cached_gateway,
    remaining_requests,
    spent_and_held,
)
from tests.processes import RedisClusterNodes, free_port

BUDGET_KEY, LIMITED_KEY = "gk-replica-budget", "gk-replica-limited"
CHAT = {"model": "budget-model", "max_tokens": 25, "messages": [{"role": "user", "content": "x"}]}
REPLY = {"x-mock-reply": "abcd efgh ijkl mnop qrst uvwx yzab cdef", "x-mock-latency-ms": "50"}


def _config(tmp: Path, store_url: str, mock_url: str, ttl_s: int = 900) -> Path:
    data: dict[str, Any] = {
        "storage": {"url": store_url},
        "logging": {"level": "warning"},
        "providers": {
            "openai": {"kind": "openai", "base_url": f"{mock_url}/v1", "api_key": PROVIDER_KEY}
        },
        "routes": [{"name": "chat", "match": {"path": "/v1/*"}, "provider": "openai"}],
        "pricing": {"budget-model": {"input": 0, "output": 4000}},
        "accounting": {"reservation_ttl_s": ttl_s},
        "keys": [
            {
                "name": "budget",
                "key_sha256": sha(BUDGET_KEY),
                "routes": ["*"],
                "budget": {"usd_per_month": 1.0},
            },
            {
                "name": "limited",
                "key_sha256": sha(LIMITED_KEY),
                "routes": ["*"],
                "rate_limit": {"rpm": 10},
            },
        ],
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def _start(
    config: Path, count: int, tmp: Path
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    procs, urls = [], []
    for i in range(count):
        port = free_port()
        command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
        with (tmp / f"gateway-{i}.log").open("wb") as log:  # the child keeps its own copy
            procs.append(subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=log))
        urls.append(f"http://127.0.0.1:{port}")
    async with aiohttp.ClientSession() as session:
        for url in urls:
            await _wait_ready(session, url)
    return procs, urls


async def _wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{url}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"gateway at {url} did not become ready")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _spread(urls: list[str], key: str, n: int) -> list[int]:
    """n concurrent requests, spread round-robin over the replicas; their statuses."""
    headers = {"Authorization": f"Bearer {key}", **REPLY}
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> int:
            async with session.post(
                f"{urls[i % len(urls)]}/v1/chat/completions", json=CHAT, headers=headers
            ) as resp:
                await resp.read()
                return resp.status

        return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _assert_budget_and_rate_limit_hold(store_url: str, mock_url: str, tmp: Path) -> None:
    procs, urls = await _start(_config(tmp, store_url, mock_url), 3, tmp)
    try:
        budget_statuses = await _spread(urls, BUDGET_KEY, 200)
        limited_statuses = await _spread(urls, LIMITED_KEY, 200)
    finally:
        _stop(procs)
    ok = budget_statuses.count(200)
    assert set(budget_statuses) == {200, 429}
    store = open_store(store_url)
    try:
        month = local_periods()[1]
        spent, held = await Accounting(store).read(
            [f"spent:k:budget:m{month}", f"held:k:budget:m{month}"]
        )
    finally:
        await store.aclose()
    assert spent == ok * 40_000  # every answer billed exactly: $0.04 each
    assert spent <= 1_000_000  # never past the $1.00 budget
    assert held == 0
    assert limited_statuses.count(200) == 10
    assert limited_statuses.count(429) == 190


@pytest.fixture
async def mock_url_for_processes(mock_server: TestServer) -> str:
    return str(mock_server.make_url("")).rstrip("/")


async def test_three_replicas_on_one_redis_hold_budget_and_rate_limit(
    redis_url: str, mock_url_for_processes: str, tmp_path: Path
) -> None:
    await _assert_budget_and_rate_limit_hold(redis_url, mock_url_for_processes, tmp_path)


async def test_killed_replica_reservations_are_charged_after_their_ttl(
    redis_url: str, mock_url_for_processes: str, mock: Any, tmp_path: Path
) -> None:
    config = _config(tmp_path, redis_url, mock_url_for_processes, ttl_s=2)
    procs, urls = await _start(config, 1, tmp_path)
    headers = {"Authorization": f"Bearer {BUDGET_KEY}", "x-mock-latency-ms": "10000"}
    async with aiohttp.ClientSession() as session:
        pending = [
            asyncio.create_task(
                session.post(f"{urls[0]}/v1/chat/completions", json=CHAT, headers=headers)
            )
            for _ in range(3)
        ]
        while len(mock.requests) < 3:  # all three reserved and in flight upstream
            await asyncio.sleep(0.02)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=10)
        await asyncio.gather(*pending, return_exceptions=True)
    store = open_store(redis_url)
    accounting = Accounting(store)
    month = local_periods()[1]
    try:
        assert await accounting.open_reservations() == 3
        await asyncio.sleep(2.2)
        assert await accounting.sweep() == 3
        assert await accounting.open_reservations() == 0
        spent, held = await accounting.read([f"spent:k:budget:m{month}", f"held:k:budget:m{month}"])
    finally:
        await store.aclose()
    assert spent == 3 * 100_000  # each at its reserved worst case, $0.10: never free
    assert held == 0


async def test_three_replicas_on_a_redis_cluster_hold_budget_and_rate_limit(
    redis_cluster: RedisClusterNodes, mock_url_for_processes: str, tmp_path: Path
) -> None:
    await _assert_budget_and_rate_limit_hold(redis_cluster.url, mock_url_for_processes, tmp_path)


async def test_a_cache_hit_on_a_redis_cluster_is_counted_and_leaves_nothing_held(
    redis_cluster: RedisClusterNodes, make_gateway: MakeGateway, mock: Any
) -> None:  # the cluster first: it outlives the gateway, whose shutdown still writes to it
    # On a cluster the reservation and the lookup are two scripts (different slots), and a
    # hit settles its reservation: the same outcome as on one Redis, one round trip more.
    gateway = await limited_cached_gateway(make_gateway, redis_cluster.url)
    miss, body = await post(gateway, round_trip.CHAT, {**round_trip.A, **round_trip.REPLY})
    hit, cached = await post(gateway, round_trip.CHAT, {**round_trip.A, **round_trip.REPLY})
    assert (miss.headers["x-gateway-cache"], hit.headers["x-gateway-cache"]) == ("MISS", "HIT")
    assert (hit.status, cached) == (200, body)
    assert remaining_requests(hit) == remaining_requests(miss) - 1
    assert len(mock.requests) == 1
    assert await spent_and_held(gateway) == [round_trip.COST, 0, 0]

"""The gateway's own time in a request (`overhead_ms` in its log line and admin entry, the
`llm_gateway_overhead_seconds` histogram): its whole time less the upstream exchange."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from gateway.store.accounting import ACCOUNTING
from tests.conftest import KEY_A, sha
from tests.integration.test_admin_requests import ADMIN, Client, MakeGateway, listed
from tests.integration.test_cache import cache_config, chat, post
from tests.integration.test_metrics_endpoint import sample, scrape

AUTH = {"Authorization": f"Bearer {KEY_A}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
PROVIDER_MS = 300  # the mock's wait before its answer's headers
STORE_S = 0.2  # a slowed store's wait before each reservation
ROUTES = [
    {
        "name": "chat",
        "match": {"path": "/v1/chat/completions"},
        "provider": "openai",
        "cache": {"ttl_s": 60},
    }
]
BUDGETED = [
    {"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"], "budget": {"usd_per_day": 10}}
]


async def gateway_with(make_gateway: MakeGateway, store_url: str, **config: Any) -> Client:
    admin = {"token_sha256": sha(ADMIN)}
    return await make_gateway(admin=admin, storage={"url": store_url}, keys=BUDGETED, **config)


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "stream"])
async def test_the_provider_s_time_is_left_out_and_a_hit_is_all_the_gateway_s(
    make_gateway: MakeGateway, store_url: str, stream: bool
) -> None:
    gateway = await gateway_with(make_gateway, store_url, routes=ROUTES)
    slow = {**AUTH, "x-mock-latency-ms": str(PROVIDER_MS)}
    for expected in ("MISS", "HIT"):
        resp = await gateway.post(
            "/v1/chat/completions", json={**CHAT, "stream": stream}, headers=slow
        )
        assert (resp.status, resp.headers["x-gateway-cache"]) == (200, expected)
        await resp.read()
    hit, miss = await listed(gateway, want=2)
    assert (miss["cache"], hit["cache"]) == ("MISS", "HIT")
    assert miss["latency_ms"] >= PROVIDER_MS
    # What the provider took (at least PROVIDER_MS) is the difference between the two.
    assert 0 < miss["overhead_ms"] <= miss["latency_ms"] - PROVIDER_MS
    assert hit["overhead_ms"] == hit["latency_ms"]  # no upstream exchange: all of it
    samples = await scrape(gateway)
    assert sample(samples, "llm_gateway_overhead_seconds_count", route="chat") == 2
    own = sample(samples, "llm_gateway_overhead_seconds_sum", route="chat")
    whole = sample(
        samples, "llm_gateway_request_duration_seconds_sum", route="chat", model="gpt-4o-mini"
    )
    assert own is not None
    assert whole is not None
    assert own < PROVIDER_MS / 1000 <= whole - own


async def test_waiting_for_the_store_s_verdict_is_the_gateway_s_time(
    make_gateway: MakeGateway, store_url: str
) -> None:
    """A route without cache asks for the budget's verdict in the upstream stage itself; the
    exchange starts once the verdict is in, so the store's wait counts as the gateway's."""
    gateway = await gateway_with(make_gateway, store_url)
    accounting = gateway.app[ACCOUNTING]
    reserve = accounting.reserve

    async def slow_reserve(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(STORE_S)
        return await reserve(*args, **kwargs)

    accounting.reserve = slow_reserve  # type: ignore[method-assign]
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    (row,) = await listed(gateway)
    assert row["overhead_ms"] >= STORE_S * 1000
    samples = await scrape(gateway)
    upstream = {"provider": "openai", "model": "gpt-4o-mini"}
    assert sample(samples, "llm_gateway_upstream_duration_seconds_count", **upstream) == 1
    took = sample(samples, "llm_gateway_upstream_duration_seconds_sum", **upstream)
    assert took is not None
    assert took < STORE_S


def own_and_whole(samples: dict[Any, float]) -> tuple[float, float]:
    """The route's summed overhead and summed request duration, in seconds."""
    own = sample(samples, "llm_gateway_overhead_seconds_sum", route="chat")
    whole = sample(
        samples, "llm_gateway_request_duration_seconds_sum", route="chat", model="gpt-4o-mini"
    )
    assert own is not None
    assert whole is not None
    return own, whole


async def test_waiting_for_a_twin_s_upstream_call_is_the_provider_s_time(
    make_gateway: MakeGateway, store_url: str
) -> None:
    gateway = await make_gateway(**cache_config(store_url))
    slow = {**AUTH, "x-mock-latency-ms": str(PROVIDER_MS)}
    answers = await asyncio.gather(*(post(gateway, chat(), slow) for _ in range(5)))
    assert sorted(resp.headers["x-gateway-cache"] for resp, _ in answers) == ["HIT"] * 4 + ["MISS"]
    own, whole = own_and_whole(await scrape(gateway))
    assert whole >= 5 * PROVIDER_MS / 1000  # every one of them waited for the provider
    assert own < PROVIDER_MS / 1000  # ... and none of that wait is the gateway's


async def test_waiting_for_another_replica_s_call_is_the_provider_s_time(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    first = await make_gateway(**cache_config(redis_url))
    second = await make_gateway(**cache_config(redis_url))
    slow = {**AUTH, "x-mock-latency-ms": str(PROVIDER_MS)}
    leader = asyncio.create_task(post(first, chat(), slow))
    await asyncio.sleep(0.1)  # the leader's call is under way
    follower, _ = await post(second, chat())
    assert follower.headers["x-gateway-cache"] == "HIT"
    await leader
    own, whole = own_and_whole(await scrape(second))
    assert whole >= (PROVIDER_MS - 100) / 1000  # it waited for the leader's answer
    assert own < (PROVIDER_MS - 100) / 2000


async def test_a_follower_whose_client_leaves_still_counts_its_wait_as_the_provider_s(
    make_gateway: MakeGateway, store_url: str
) -> None:
    gateway = await make_gateway(**cache_config(store_url))
    slow = {**AUTH, "x-mock-latency-ms": str(PROVIDER_MS)}
    leader = asyncio.create_task(post(gateway, chat(), slow))
    await asyncio.sleep(0.05)  # the leader's call is under way
    url = str(gateway.make_url("/v1/chat/completions"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.15)) as session:
        with pytest.raises(TimeoutError):  # the follower's client gives up while it waits
            await session.post(url, json=chat(), headers=slow)
    await leader
    for _ in range(50):  # the follower is logged once its cancellation has run
        samples = await scrape(gateway)
        if sample(samples, "llm_gateway_overhead_seconds_count", route="chat") == 2:
            break
        await asyncio.sleep(0.02)
    assert sample(samples, "llm_gateway_overhead_seconds_count", route="chat") == 2
    own, _ = own_and_whole(samples)
    assert own < 0.1  # the follower's 0.15 s of waiting is not in it


def slowed(gateway: Client, call: str) -> None:
    """The store's accounting `call` (reserve: the limits' verdict, with a cache lookup riding
    in it; settle: the bill) waits STORE_S before it runs."""
    accounting = gateway.app[ACCOUNTING]
    original = getattr(accounting, call)

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(STORE_S)
        return await original(*args, **kwargs)

    setattr(accounting, call, slow)


@pytest.mark.parametrize("call", ["reserve", "settle"])
@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "stream"])
async def test_the_wait_for_the_store_is_told_apart_within_the_gateway_s_time(
    make_gateway: MakeGateway, store_url: str, call: str, stream: bool
) -> None:
    """The verdict before the upstream call and the bill the answer waits for: `store_ms`,
    part of `overhead_ms`."""
    gateway = await gateway_with(make_gateway, store_url)
    slowed(gateway, call)
    resp = await gateway.post("/v1/chat/completions", json={**CHAT, "stream": stream}, headers=AUTH)
    assert resp.status == 200
    await resp.read()
    (row,) = await listed(gateway)
    assert STORE_S * 1000 <= row["store_ms"] <= row["overhead_ms"]
    # What the store took is not the rest of the gateway's work.
    assert row["overhead_ms"] - row["store_ms"] < STORE_S * 1000
    samples = await scrape(gateway)
    assert sample(samples, "llm_gateway_store_wait_seconds_count", route="chat") == 1
    waited = sample(samples, "llm_gateway_store_wait_seconds_sum", route="chat")
    assert waited == pytest.approx(row["store_ms"] / 1000, abs=1e-4)


async def test_a_hit_s_lookup_riding_in_the_verdict_is_a_wait_for_the_store(
    make_gateway: MakeGateway, store_url: str
) -> None:
    gateway = await gateway_with(make_gateway, store_url, routes=ROUTES)
    for expected in ("MISS", "HIT"):
        resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        assert (resp.status, resp.headers["x-gateway-cache"]) == (200, expected)
        await resp.read()
        if expected == "MISS":
            (miss,) = await listed(gateway)
            slowed(gateway, "reserve")
    hit, _ = await listed(gateway, want=2)
    assert hit["cache"] == "HIT"
    assert STORE_S * 1000 <= hit["store_ms"] <= hit["overhead_ms"] == hit["latency_ms"]
    assert miss["store_ms"] < STORE_S * 1000


async def test_a_request_that_asks_nothing_of_the_store_waits_for_none(
    make_gateway: MakeGateway, store_url: str
) -> None:
    """No limit on its key and no cache on its route: no store command on its way."""
    admin = {"token_sha256": sha(ADMIN)}
    gateway = await make_gateway(admin=admin, storage={"url": store_url})
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    (row,) = await listed(gateway)
    assert row["store_ms"] == 0
    assert row["overhead_ms"] > 0
    samples = await scrape(gateway)
    assert sample(samples, "llm_gateway_store_wait_seconds_count", route="chat") == 1
    assert sample(samples, "llm_gateway_store_wait_seconds_bucket", route="chat", le="0.0005") == 1

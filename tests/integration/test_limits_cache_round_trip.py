"""The reservation and the cache read are one command; a hit holds nothing and needs no
settle; the limits still decide first, and every request that reaches the provider is billed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.accounting import local_periods
from gateway.cache.state import CACHE_STATE
from gateway.mock import MockState
from gateway.routes import STORE
from gateway.store.accounting import ACCOUNTING
from gateway.store.scripts import Script
from tests.conftest import KEY_A, sha
from tests.integration.test_cache import post
from tests.integration.test_store_coalesce import count_round_trips
from tests.processes import free_port

Client = TestClient[Any, Any]
MakeGateway = Callable[..., Awaitable[Client]]
A = {"Authorization": f"Bearer {KEY_A}"}
# $4000 per 1M output tokens: the mock's 10-token reply below costs $0.04.
PRICING = {"budget-model": {"input": 0, "output": 4000}}
REPLY = {"x-mock-reply": "abcd efgh ijkl mnop qrst uvwx yzab cdef"}
COST = 40_000  # micro-dollars
CHAT = {
    "model": "budget-model",
    "max_tokens": 25,
    "temperature": 0,
    "messages": [{"role": "user", "content": "x"}],
}
RPM = 100

BACKGROUND = {  # batched, not a request's own: they may ride in any round trip (the sweep
    # runs every few seconds from start-up, and may fall inside a slow test's window)
    Script.load("gateway.store", name).sha
    for name in ("lua/stats_add.lua", "lua/log_append.lua", "lua/sweep.lua")
}


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Each round trip to the store: the commands it carried (a script by its SHA)."""
    return count_round_trips(monkeypatch)


def _trips(recorded: list[list[str]]) -> list[list[str]]:
    """The round trips of requests: less the batched background commands, and the trips
    that carried nothing else."""
    trips = ([name for name in trip if name not in BACKGROUND] for trip in recorded)
    return [trip for trip in trips if trip]


async def limited_cached_gateway(
    make_gateway: MakeGateway,
    store_url: str,
    rpm: int = RPM,
    cache: dict[str, Any] | None = None,
    key: dict[str, Any] | None = None,
    **sections: Any,
) -> Client:
    return await make_gateway(
        storage={"url": store_url},
        pricing=PRICING,
        routes=[
            {
                "name": "chat",
                "match": {"path": "/v1/chat/completions"},
                "provider": "openai",
                "cache": {"ttl_s": 60, **(cache or {})},
            }
        ],
        keys=[
            _without_none(
                {
                    "name": "team-a",
                    "key_sha256": sha(KEY_A),
                    "routes": ["*"],
                    "budget": {"usd_per_day": 100},
                    "rate_limit": {"rpm": rpm},
                    **(key or {}),
                }
            )
        ],
        **sections,
    )


def _without_none(section: dict[str, Any]) -> dict[str, Any]:
    """`key` sets a field to None to leave it out."""
    return {name: value for name, value in section.items() if value is not None}


async def spent_and_held(gateway: Client) -> list[int]:
    day = local_periods()[0]
    accounting = gateway.app[ACCOUNTING]
    names = [f"spent:k:team-a:d{day}", f"held:k:team-a:d{day}"]
    return [*await accounting.read(names), await accounting.open_reservations()]


def remaining_requests(resp: Any) -> int:
    return int(resp.headers["x-ratelimit-remaining-requests"])


async def test_a_miss_is_two_commands_the_reservation_with_the_read_the_bill_with_the_write(
    make_gateway: MakeGateway, redis_url: str, trips: list[list[str]], mock: MockState
) -> None:
    gateway = await limited_cached_gateway(make_gateway, redis_url)
    trips.clear()  # start-up: loading scripts, the first sweep
    resp, body = await post(gateway, CHAT, {**A, **REPLY})
    assert resp.status == 200
    assert resp.headers["x-gateway-cache"] == "MISS"
    scripts = gateway.app[CACHE_STATE].scripts
    # The reservation and the lookup: one command; the bill (before the answer leaves) and
    # the answer's cache entry: one command.
    assert _trips(trips) == [[scripts.reserve_lookup.sha], [scripts.settle_store.sha]]
    assert await spent_and_held(gateway) == [COST, 0, 0]
    assert gateway.app[CACHE_STATE].writing == {}  # stored: no longer served from memory
    assert gateway.app[CACHE_STATE].stats.stores == 1
    hit, cached = await post(gateway, CHAT, {**A, **REPLY})
    assert (hit.headers["x-gateway-cache"], cached) == ("HIT", body)  # from the store
    assert len(mock.requests) == 1


async def test_a_hit_is_one_round_trip_and_holds_nothing(
    make_gateway: MakeGateway, redis_url: str, trips: list[list[str]]
) -> None:
    gateway = await limited_cached_gateway(make_gateway, redis_url)
    miss, body = await post(gateway, CHAT, {**A, **REPLY})
    trips.clear()
    hit, cached = await post(gateway, CHAT, {**A, **REPLY})
    assert (hit.status, hit.headers["x-gateway-cache"], cached) == (200, "HIT", body)
    reserve_lookup = gateway.app[CACHE_STATE].scripts.reserve_lookup.sha
    assert _trips(trips) == [[reserve_lookup]]  # no settle: nothing was held
    assert remaining_requests(hit) == remaining_requests(miss) - 1  # counted all the same
    assert hit.headers["x-gateway-cost-usd"] == "0.000000"
    assert await spent_and_held(gateway) == [COST, 0, 0]


async def test_followers_served_their_twins_answer_hold_nothing(
    make_gateway: MakeGateway, redis_url: str, trips: list[list[str]], mock: MockState
) -> None:
    gateway = await limited_cached_gateway(make_gateway, redis_url)
    trips.clear()
    slow = {**A, **REPLY, "x-mock-latency-ms": "200"}
    answers = await asyncio.gather(*(post(gateway, CHAT, slow) for _ in range(10)))
    assert sorted(resp.headers["x-gateway-cache"] for resp, _ in answers) == ["HIT"] * 9 + ["MISS"]
    assert len(mock.requests) == 1
    settle = gateway.app[CACHE_STATE].scripts.settle_store.sha
    assert sum(trip.count(settle) for trip in trips) == 1  # the leader's only
    assert await spent_and_held(gateway) == [COST, 0, 0]
    after, _ = await post(gateway, {**CHAT, "max_tokens": 24}, {**A, **REPLY})
    assert remaining_requests(after) == RPM - 11  # every follower was counted


async def test_followers_left_to_go_upstream_alone_are_held_and_billed(
    make_gateway: MakeGateway, store_url: str, mock: MockState
) -> None:
    # An answer too large to store: the leader has nothing to share.
    gateway = await limited_cached_gateway(make_gateway, store_url, cache={"max_entry_bytes": 16})
    slow = {**A, **REPLY, "x-mock-latency-ms": "200"}
    answers = await asyncio.gather(*(post(gateway, CHAT, slow) for _ in range(4)))
    assert {resp.status for resp, _ in answers} == {200}
    assert {resp.headers["x-gateway-cost-usd"] for resp, _ in answers} == {"0.040000"}
    assert len(mock.requests) == 4
    assert await spent_and_held(gateway) == [4 * COST, 0, 0]
    after, _ = await post(gateway, {**CHAT, "max_tokens": 24}, {**A, **REPLY})
    assert remaining_requests(after) == RPM - 5  # each counted once, not again when held


async def test_an_entry_it_cannot_read_sends_the_request_upstream_held_and_billed(
    make_gateway: MakeGateway, redis_url: str, mock: MockState
) -> None:
    gateway = await limited_cached_gateway(make_gateway, redis_url)
    await post(gateway, CHAT, {**A, **REPLY})
    store = gateway.app[STORE]
    (key,) = [k async for k in store.scan_iter(match="gw:cache:*") if not k.endswith(b":lock")]
    await store.set(key, b"99999999999999\nnot an entry")  # fresh by its expiry, else damaged
    resp, _ = await post(gateway, CHAT, {**A, **REPLY})
    assert (resp.status, resp.headers["x-gateway-cache"]) == (200, "MISS")
    assert len(mock.requests) == 2
    assert await spent_and_held(gateway) == [2 * COST, 0, 0]


async def test_a_refused_request_is_not_answered_from_the_cache(
    make_gateway: MakeGateway, store_url: str, mock: MockState
) -> None:
    gateway = await limited_cached_gateway(make_gateway, store_url, rpm=1)
    first = await gateway.post("/v1/chat/completions", json=CHAT, headers=A)
    assert first.status == 200
    second = await gateway.post("/v1/chat/completions", json=CHAT, headers=A)
    assert second.status == 429
    assert "x-gateway-cache" not in second.headers
    assert (await second.json())["error"]["code"] == "rate_limit_exceeded"
    assert len(mock.requests) == 1


async def test_a_refused_request_never_reaches_the_provider(
    make_gateway: MakeGateway, store_url: str, mock: MockState
) -> None:
    gateway = await limited_cached_gateway(make_gateway, store_url, rpm=1)
    unique = [{**CHAT, "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(3)]
    statuses = [
        (await gateway.post("/v1/chat/completions", json=body, headers=A)).status for body in unique
    ]
    assert statuses == [200, 429, 429]
    assert len(mock.requests) == 1


async def test_with_the_store_down_the_cache_acts_empty_and_the_budget_policy_decides(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await limited_cached_gateway(
        make_gateway,
        f"redis://127.0.0.1:{free_port()}/0",
        # One request's worst case ($0.10); not a second's beside the first's cost ($0.04).
        key={"outage_allowance_usd": 0.12},
        accounting={"budget_on_store_error": "allowance"},
    )
    first, _ = await post(gateway, CHAT, {**A, **REPLY})
    second, _ = await post(gateway, CHAT, {**A, **REPLY})
    assert (first.status, first.headers["x-gateway-cache"]) == (200, "MISS")
    assert second.status == 503
    assert (await second.json())["error"]["code"] == "budget_store_unavailable"
    assert len(mock.requests) == 1
    assert gateway.app[CACHE_STATE].stats.errors == 1  # then it rests: not asked again


async def test_a_settle_the_store_fails_takes_its_write_along_and_the_cache_forgets_it(
    make_gateway: MakeGateway, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await limited_cached_gateway(make_gateway, redis_url)
    store, state = gateway.app[STORE], gateway.app[CACHE_STATE]
    send = store.execute_command

    async def failing(*args: Any, **options: Any) -> Any:
        if args[:2] == ("EVALSHA", state.scripts.settle_store.sha):
            raise RedisConnectionError("the store went away")
        return await send(*args, **options)

    monkeypatch.setattr(store, "execute_command", failing)
    resp, _ = await post(gateway, CHAT, {**A, **REPLY})
    assert (resp.status, resp.headers["x-gateway-cost-usd"]) == (200, "0.040000")
    # Neither the bill nor the entry reached the store: the reservation is left for the
    # sweep, the entry is not served from memory any longer, and the cache counts a failure.
    assert await spent_and_held(gateway) == [0, 100_000, 1]
    assert state.writing == {}
    assert (state.stats.stores, state.stats.errors) == (0, 1)
    assert [k async for k in store.scan_iter(match="gw:cache:*") if not k.endswith(b":lock")] == []


async def test_a_request_holding_nothing_writes_its_entry_on_its_own(
    make_gateway: MakeGateway, redis_url: str, trips: list[list[str]], mock: MockState
) -> None:
    # No budget and no rate limit: the request asks the store nothing before its answer.
    gateway = await limited_cached_gateway(
        make_gateway, redis_url, key={"budget": None, "rate_limit": None}
    )
    trips.clear()
    resp, body = await post(gateway, CHAT, {**A, **REPLY})
    assert (resp.status, resp.headers["x-gateway-cache"]) == (200, "MISS")
    scripts = gateway.app[CACHE_STATE].scripts
    assert _trips(trips) == [[scripts.lookup.sha], [scripts.store.sha]]
    await asyncio.sleep(0.05)
    assert gateway.app[CACHE_STATE].stats.stores == 1
    hit, cached = await post(gateway, CHAT, {**A, **REPLY})
    assert (hit.headers["x-gateway-cache"], cached) == ("HIT", body)
    assert len(mock.requests) == 1


async def test_a_settle_that_fails_before_the_store_is_asked_leaves_no_entry_behind(
    make_gateway: MakeGateway, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await limited_cached_gateway(make_gateway, redis_url)
    state = gateway.app[CACHE_STATE]

    def failing(*args: Any) -> Any:
        raise RuntimeError("a defect in the statistics")

    monkeypatch.setattr(gateway.app[ACCOUNTING], "count", failing)
    resp, _ = await post(gateway, CHAT, {**A, **REPLY})
    assert resp.status == 200  # the answer was decided; the failing hook is logged
    assert state.writing == {}  # its entry is not kept in memory for ever
    assert (state.stats.stores, state.stats.errors) == (0, 0)
    assert state.health.usable()  # not the store's failure: the cache does not rest

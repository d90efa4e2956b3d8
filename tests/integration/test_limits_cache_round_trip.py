"""The reservation and the cache read share one round trip; the limits still decide first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.mock import MockState
from tests.conftest import KEY_A, sha
from tests.integration.test_store_coalesce import count_round_trips

Client = TestClient[Any, Any]
A = {"Authorization": f"Bearer {KEY_A}"}
CHAT = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "x"}]}

pytestmark = pytest.mark.redis


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The commands each round trip to the store carried."""
    return count_round_trips(monkeypatch)


async def limited_cached_gateway(
    make_gateway: Callable[..., Awaitable[Client]], redis_url: str, rpm: int
) -> Client:
    return await make_gateway(
        storage={"url": redis_url},
        routes=[
            {
                "name": "chat",
                "match": {"path": "/v1/chat/completions"},
                "provider": "openai",
                "cache": {"ttl_s": 60},
            }
        ],
        keys=[
            {
                "name": "team-a",
                "key_sha256": sha(KEY_A),
                "routes": ["*"],
                "budget": {"usd_per_day": 100},
                "rate_limit": {"rpm": rpm},
            }
        ],
    )


async def test_reservation_and_cache_read_travel_together(
    make_gateway: Callable[..., Awaitable[Client]], redis_url: str, trips: list[list[str]]
) -> None:
    gateway = await limited_cached_gateway(make_gateway, redis_url, rpm=100)
    trips.clear()  # start-up: loading scripts, the first sweep
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=A)
    assert resp.status == 200
    assert resp.headers["x-gateway-cache"] == "MISS"
    assert len(trips[0]) == 2  # the reservation and the cache lookup: one round trip


async def test_a_refused_request_is_not_answered_from_the_cache(
    make_gateway: Callable[..., Awaitable[Client]], redis_url: str, mock: MockState
) -> None:
    gateway = await limited_cached_gateway(make_gateway, redis_url, rpm=1)
    first = await gateway.post("/v1/chat/completions", json=CHAT, headers=A)
    assert first.status == 200
    second = await gateway.post("/v1/chat/completions", json=CHAT, headers=A)
    assert second.status == 429
    assert "x-gateway-cache" not in second.headers
    assert (await second.json())["error"]["code"] == "rate_limit_exceeded"
    assert len(mock.requests) == 1


async def test_a_refused_request_never_reaches_the_provider(
    make_gateway: Callable[..., Awaitable[Client]], redis_url: str, mock: MockState
) -> None:
    gateway = await limited_cached_gateway(make_gateway, redis_url, rpm=1)
    unique = [{**CHAT, "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(3)]
    statuses = [
        (await gateway.post("/v1/chat/completions", json=body, headers=A)).status for body in unique
    ]
    assert statuses == [200, 429, 429]
    assert len(mock.requests) == 1

"""`storage.url: unix:///path/redis.sock?db=N`: a Redis on the same host, over its Unix
socket, holds the cache, the budgets and the rate limits as it does over TCP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.accounting import local_periods
from gateway.mock import MockState
from gateway.store import open_store
from gateway.store.accounting import Accounting
from tests.conftest import KEY_A, sha
from tests.integration.test_cache import cache_config
from tests.processes import redis_process

# $4000 per 1M output tokens: the mock's 10-token reply costs $0.04.
PRICING = {"gpt-4o-mini": {"input": 0, "output": 4000}}
REPLY = "abcd efgh ijkl mnop qrst uvwx yzab cdef"
CHAT = {
    "model": "gpt-4o-mini",
    "max_tokens": 25,
    "temperature": 0,
    "messages": [{"role": "user", "content": "over the socket"}],
}


async def test_a_redis_on_its_unix_socket_caches_bills_and_limits(
    tmp_path: Path,
    make_gateway: Callable[..., Awaitable[TestClient[Any, Any]]],
    mock: MockState,
) -> None:
    with redis_process(tmp_path, unix=True) as redis:
        assert redis.url.startswith("unix://")
        gateway = await make_gateway(
            **cache_config(redis.url),
            pricing=PRICING,
            keys=[
                {
                    "name": "team-a",
                    "key_sha256": sha(KEY_A),
                    "routes": ["*"],
                    "budget": {"usd_per_month": 100},
                    "rate_limit": {"rpm": 2},
                }
            ],
        )
        headers = {"Authorization": f"Bearer {KEY_A}", "x-mock-reply": REPLY}
        seen = []
        for _ in range(3):
            resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=headers)
            seen.append((resp.status, resp.headers.get("x-gateway-cache"), await resp.json()))
        ready = await (await gateway.get("/readyz")).json()

        store = open_store(redis.url)
        try:
            (spent,) = await Accounting(store).read([f"spent:k:team-a:m{local_periods()[1]}"])
        finally:
            await store.aclose()

    assert ready["store"] == "ok"
    assert [(status, cache) for status, cache, _ in seen] == [
        (200, "MISS"),
        (200, "HIT"),
        (429, None),  # the third request of the minute, over `rpm: 2`
    ]
    assert seen[1][2]["choices"] == seen[0][2]["choices"]
    assert seen[2][2]["error"]["code"] == "rate_limit_exceeded"
    assert len(mock.requests) == 1  # the hit and the refusal never reached the provider
    assert spent == 40_000  # micro-dollars: the miss's bill; the hit costs nothing

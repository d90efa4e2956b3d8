"""A finished request leaves no reference cycle behind: its objects are freed as soon as it
ends, not left for the cycle collector (whose full passes over that garbage cost more CPU than
any stage, and stalled every request in flight meanwhile)."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from aiohttp import web

from gateway.attempts import AttemptFailed
from gateway.context import RequestContext
from gateway.drain import DRAIN
from gateway.errors import GatewayError
from gateway.mock import MockState
from tests.conftest import KEY_A, PROVIDER_KEY, sha
from tests.integration.test_cache import A, MakeGateway, cache_config, chat, post
from tests.integration.test_cache_redis_failures import closed_port

pytestmark = pytest.mark.redis

LIMITED_KEY = {
    "name": "team-a",
    "key_sha256": sha(KEY_A),
    "routes": ["*"],
    "budget": {"usd_per_month": 100},
    "rate_limit": {"rpm": 10_000, "tpm": 10_000_000},
}


def failing_config(mock_url: str, closed_port: int) -> dict[str, Any]:
    """`chat` tries its provider twice; `gone` has a provider nothing listens for."""
    retry = {"attempts": 2, "base_s": 0}
    return {
        "providers": {
            "openai": {"kind": "openai", "base_url": f"{mock_url}/v1", "api_key": PROVIDER_KEY},
            "gone": {"kind": "openai", "base_url": f"http://127.0.0.1:{closed_port}/v1"},
        },
        "routes": [
            {"name": "gone", "match": {"model": "gone"}, "provider": "gone", "retry": retry},
            {"name": "chat", "match": {"path": "/v1/*"}, "provider": "openai", "retry": retry},
        ],
    }


def garbage_of(kinds: tuple[type, ...]) -> list[Any]:
    """The unreachable objects of those kinds that only the cycle collector would free."""
    gc.collect()
    return [o for o in gc.garbage if isinstance(o, kinds)]


async def test_requests_of_every_kind_leave_no_cycles(
    make_gateway: MakeGateway, redis_url: str, mock: MockState
) -> None:
    gateway = await make_gateway(**cache_config(redis_url), keys=[LIMITED_KEY])
    await post(gateway, chat("warm-up"))  # first use builds loggers, scripts, connections
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what the collector finds, to look at it
    try:
        await post(gateway, chat("once"))  # a cache miss, with reservation and settle
        await post(gateway, chat("once"))  # a hit
        streamed = await gateway.post(
            "/v1/chat/completions", json=chat("streamed", stream=True), headers=A
        )
        assert b"[DONE]" in await streamed.read()
        refused = await gateway.post("/v1/chat/completions", data=b"{not json", headers=A)
        assert refused.status == 400
        assert await gateway.server.app[DRAIN].wait_idle(5)
        left = garbage_of((RequestContext, web.Request, web.StreamResponse))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


async def test_failed_requests_leave_no_cycles(
    make_gateway: MakeGateway, mock_url: str, mock: MockState
) -> None:
    gateway = await make_gateway(**failing_config(mock_url, closed_port()))
    failing = {**A, "x-mock-status": "500"}
    await post(gateway, chat("warm-up"), failing)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        passed_on, _ = await post(gateway, chat("fails twice"), failing)
        assert passed_on.status == 500  # the provider's error, after the gateway's retries
        unreachable, _ = await post(gateway, chat("nobody there", model="gone"))
        assert unreachable.status == 502
        assert await gateway.server.app[DRAIN].wait_idle(5)
        # (aiohttp's own connection error keeps a small cycle of its own, request-free)
        left = garbage_of(
            (RequestContext, web.Request, web.StreamResponse, GatewayError, AttemptFailed)
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []

"""Liveness and readiness."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]


async def test_healthz_answers_ok(gateway: Client) -> None:
    resp = await gateway.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"


async def test_readyz_is_ready_on_each_store(
    make_gateway: Callable[..., Awaitable[Client]], store_url: str
) -> None:
    gateway = await make_gateway(storage={"url": store_url})
    resp = await gateway.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "store": "ok"}


async def test_readyz_is_503_when_store_is_unreachable(
    make_gateway: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await make_gateway(storage={"url": "redis://127.0.0.1:1/0"})
    resp = await gateway.get("/readyz")
    assert resp.status == 503
    assert "unreachable" in (await resp.json())["store"]

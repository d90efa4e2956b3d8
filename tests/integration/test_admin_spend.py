"""The admin views of money, the admin token, and budget threshold alerts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.drain import DRAIN
from tests.conftest import KEY_A, KEY_B, sha
from tests.integration.test_budgets import CHAT, PRICING, REPLY_40_CHARS, _keys, _routes

Client = TestClient[Any, Any]
ADMIN = "admin-token-for-tests"
A = {"Authorization": f"Bearer {KEY_A}", "x-mock-reply": REPLY_40_CHARS}
B = {"Authorization": f"Bearer {KEY_B}"}


@pytest.fixture
def admin_gateway(
    make_gateway: Callable[..., Awaitable[Client]], store_url: str
) -> Callable[..., Awaitable[Client]]:
    async def make(**keys: Any) -> Client:
        return await make_gateway(
            storage={"url": store_url},
            pricing=PRICING,
            routes=_routes(),
            keys=_keys(a=keys),
            admin={"token_sha256": sha(ADMIN)},
        )

    return make


@pytest.mark.parametrize("path", ["/admin/keys", "/admin/stats"])
async def test_admin_views_need_the_admin_token(
    admin_gateway: Callable[..., Awaitable[Client]], path: str
) -> None:
    gateway = await admin_gateway()
    assert (await gateway.get(path)).status == 401
    assert (await gateway.get(path, headers={"Authorization": "Bearer nope"})).status == 401
    as_key = await gateway.get(path, headers={"Authorization": f"Bearer {KEY_A}"})
    assert as_key.status == 403
    assert (await as_key.json())["error"]["code"] == "admin_only"
    assert (await gateway.get(path, headers={"Authorization": f"Bearer {ADMIN}"})).status == 200


async def test_admin_keys_shows_spent_and_limits(
    admin_gateway: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await admin_gateway(budget={"usd_per_month": 1.5, "usd_per_day": 0.5})
    for _ in range(3):
        assert (await gateway.post("/v1/chat/completions", json=CHAT, headers=A)).status == 200
    assert await gateway.app[DRAIN].wait_idle(5)  # each request settled
    resp = await gateway.get("/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"})
    body = await resp.json()
    team_a = next(k for k in body["keys"] if k["name"] == "team-a")
    assert team_a["requests_this_month"] == 3
    assert team_a["cost_this_month_usd"] == "0.120000"
    budget = team_a["budgets"][0]
    assert budget["month"] == {
        "spent_usd": "0.120000",
        "held_usd": "0.000000",
        "limit_usd": "1.500000",
        "tokens": budget["month"]["tokens"],
        "limit_tokens": None,
    }
    assert budget["day"]["limit_usd"] == "0.500000"
    assert body["open_reservations"] == 0
    # team-b has no budget: no block of zeros that would say it spent nothing.
    team_b = next(k for k in body["keys"] if k["name"] == "team-b")
    assert team_b["budgets"] == []


async def test_admin_keys_shows_a_route_budget_once_with_every_keys_spend(
    make_gateway: Callable[..., Awaitable[Client]], store_url: str
) -> None:
    gateway = await make_gateway(
        storage={"url": store_url},
        pricing=PRICING,
        routes=_routes(budget={"usd_per_month": 3}),
        keys=_keys(),
        admin={"token_sha256": sha(ADMIN)},
    )
    for headers in (A, {**B, "x-mock-reply": REPLY_40_CHARS}):
        assert (
            await gateway.post("/v1/chat/completions", json=CHAT, headers=headers)
        ).status == 200
    assert await gateway.app[DRAIN].wait_idle(5)
    resp = await gateway.get("/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"})
    body = await resp.json()
    assert body["routes"] == [
        {
            "name": "chat",
            "scope": "route",
            "day": {"spent_usd": "0.080000", "held_usd": "0.000000", "limit_usd": None},
            "month": {
                "spent_usd": "0.080000",
                "held_usd": "0.000000",
                "limit_usd": "3.000000",
                "tokens": 28,
                "limit_tokens": None,
            },
        }
    ]


async def test_admin_stats_totals_per_key_and_model_with_projection(
    admin_gateway: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await admin_gateway()
    for _ in range(2):
        await gateway.post("/v1/chat/completions", json=CHAT, headers=A)
    assert await gateway.app[DRAIN].wait_idle(5)  # each request settled
    resp = await gateway.get("/admin/stats", headers={"Authorization": f"Bearer {ADMIN}"})
    stats = await resp.json()
    assert stats["total"]["requests"] == 2
    assert stats["total"]["cost_usd"] == "0.080000"
    assert stats["keys"][0]["name"] == "team-a"
    assert stats["models"][0] == {**stats["models"][0], "name": "budget-model", "requests": 2}
    assert float(stats["projected_month_cost_usd"]) >= 0.08


async def test_admin_stats_count_a_stale_answer_apart_from_the_hits(
    make_gateway: Callable[..., Awaitable[Client]], store_url: str
) -> None:
    cached = {"cache": {"ttl_s": 1, "stale_s": 600}, "retry": {"attempts": 1}}
    gateway = await make_gateway(
        storage={"url": store_url},
        pricing=PRICING,
        routes=_routes(**cached),
        keys=_keys(),
        admin={"token_sha256": sha(ADMIN)},
    )
    chat = {**CHAT, "temperature": 0}
    answers = []
    for delay, headers in [(0, A), (0, A), (1.2, {**A, "x-mock-status": "503"})]:
        await asyncio.sleep(delay)  # past the entry's TTL: served stale, the provider failing
        resp = await gateway.post("/v1/chat/completions", json=chat, headers=headers)
        answers.append((resp.status, resp.headers["x-gateway-cache"]))
    assert answers == [(200, "MISS"), (200, "HIT"), (200, "STALE")]
    assert await gateway.app[DRAIN].wait_idle(5)
    resp = await gateway.get("/admin/stats", headers={"Authorization": f"Bearer {ADMIN}"})
    route = next(r for r in (await resp.json())["routes"] if r["name"] == "chat")
    assert (route["cache_hits"], route["cache_hit_rate"], route["cache_stale"]) == (1, 0.5, 1)


async def _webhook_receiver(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> tuple[list[dict[str, Any]], str]:
    """The notices a webhook receives, as they come, and its URL."""
    notices: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        notices.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    receiver = await aiohttp_server(app)
    return notices, str(receiver.make_url("/hook"))


async def test_budget_thresholds_post_one_webhook_notice_each(
    admin_gateway: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    notices, hook_url = await _webhook_receiver(aiohttp_server)
    gateway = await admin_gateway(budget={"usd_per_month": 0.2}, webhook_url=hook_url)
    small = {**CHAT, "max_tokens": 12}  # reserves $0.048, so four fit in $0.20
    for _ in range(4):  # $0.04 each: 0.04, 0.08, 0.12 (crosses 50%), 0.16 (crosses 80%)
        assert (await gateway.post("/v1/chat/completions", json=small, headers=A)).status == 200
    for _ in range(50):
        if len(notices) >= 2:
            break
        await asyncio.sleep(0.02)
    assert [(n["percent"], n["period"], n["spent_usd"]) for n in notices] == [
        (50, "month", "0.120000"),
        (80, "month", "0.160000"),
    ]
    assert notices[0]["event"] == "budget_threshold"
    assert notices[0]["budget"] == "key 'team-a'"


async def test_a_tokens_per_month_budget_crossing_half_posts_a_notice_in_tokens(
    admin_gateway: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    notices, hook_url = await _webhook_receiver(aiohttp_server)
    gateway = await admin_gateway(budget={"tokens_per_month": 100}, webhook_url=hook_url)
    small = {**CHAT, "max_tokens": 12}
    # 14 tokens each (4 in, 10 out): 14, 28, 42, 56 (crosses 50 %), 70; then the next
    # request's worst case no longer fits.
    statuses = [
        (await gateway.post("/v1/chat/completions", json=small, headers=A)).status for _ in range(6)
    ]
    assert statuses == [200, 200, 200, 200, 200, 429]
    for _ in range(50):
        if notices:
            break
        await asyncio.sleep(0.02)
    assert notices == [
        {
            "event": "budget_threshold",
            "budget": "key 'team-a'",
            "scope": "k:team-a",
            "period": "tokens",
            "percent": 50,
            "spent_tokens": 56,
            "limit_tokens": 100,
        }
    ]

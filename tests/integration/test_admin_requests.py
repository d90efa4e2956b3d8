"""GET /admin/requests: the last requests of every replica, filtered, capped, admin only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.drain import DRAIN
from gateway.requestlog import STREAM_KEY
from gateway.routes import STORE
from tests.conftest import KEY_A, KEY_B, PROVIDER_KEY, sha

Client = TestClient[Any, Any]
MakeGateway = Callable[..., Awaitable[Client]]
ADMIN = "admin-token-for-tests"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def admin_gateway(make_gateway: MakeGateway, store_url: str) -> Client:
    return await make_gateway(admin={"token_sha256": sha(ADMIN)}, storage={"url": store_url})


async def send(client: Client, key: str, **headers: str) -> int:
    """One request, to its end: entries are listed in the order requests ended, which for
    requests sent one after another is the order they were sent only once each has ended."""
    auth = {"Authorization": f"Bearer {key}", **headers}
    resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
    await resp.read()
    assert await client.app[DRAIN].wait_idle(5)
    return resp.status


async def listed(client: Client, query: str = "", want: int = 1) -> list[dict[str, Any]]:
    """The rows, once at least `want` are there (writes happen just after each response)."""
    for _ in range(100):
        resp = await client.get(f"/admin/requests{query}", headers=ADMIN_AUTH)
        assert resp.status == 200
        rows: list[dict[str, Any]] = (await resp.json())["requests"]
        if len(rows) >= want:
            return rows
        await asyncio.sleep(0.02)
    return rows


async def test_requests_are_listed_newest_first_with_what_an_operator_needs(
    admin_gateway: Client,
) -> None:
    assert await send(admin_gateway, KEY_A) == 200
    assert await send(admin_gateway, KEY_A, **{"x-mock-status": "400"}) == 400
    rows = await listed(admin_gateway, want=2)
    assert [r["status"] for r in rows] == [400, 200]
    ok = rows[1]
    assert ok["key"] == "team-a"
    assert ok["route"] == "chat"
    assert ok["model"] == "gpt-4o-mini"
    assert ok["attempts"] == 1
    assert ok["latency_ms"] > 0
    assert ok["input_tokens"] > 0
    assert ok["output_tokens"] > 0
    assert float(ok["cost_usd"]) > 0
    assert {"cache", "ttfb_ms", "error_code", "request_id", "time"} <= set(ok)


async def test_entries_never_hold_a_gateway_or_provider_key(admin_gateway: Client) -> None:
    await send(admin_gateway, KEY_A)
    await send(admin_gateway, "gk-wrong-key-never-logged")
    await listed(admin_gateway, want=2)
    raw = await admin_gateway.app[STORE].xrange(STREAM_KEY)
    dumped = orjson.dumps([fields[b"j"].decode() for _, fields in raw]).decode()
    for secret in (KEY_A, PROVIDER_KEY, "gk-wrong-key-never-logged"):
        assert secret not in dumped


async def test_filters_by_key_and_status_and_limit(admin_gateway: Client) -> None:
    for _ in range(3):
        await send(admin_gateway, KEY_A)
    await send(admin_gateway, KEY_B)
    await send(admin_gateway, "gk-unknown")
    await listed(admin_gateway, want=5)
    team_b = await listed(admin_gateway, "?key=team-b")
    assert [r["key"] for r in team_b] == ["team-b"]
    errors = await listed(admin_gateway, "?status=4xx")
    assert [r["status"] for r in errors] == [401]
    assert len(await listed(admin_gateway, "?limit=2")) == 2
    assert await listed(admin_gateway, "?status=503", want=0) == []


async def test_bad_limit_or_status_is_a_400(admin_gateway: Client) -> None:
    # Superscript digits are digits to str.isdigit, not to int().
    queries = ("?limit=0", "?limit=abc", "?limit=100000", "?status=teapot", "?limit=%C2%B2")
    for query in (*queries, "?status=%C2%B2%C2%B2%C2%B2"):
        resp = await admin_gateway.get(f"/admin/requests{query}", headers=ADMIN_AUTH)
        assert resp.status == 400, query


async def test_needs_the_admin_token_and_refuses_a_gateway_key(admin_gateway: Client) -> None:
    assert (await admin_gateway.get("/admin/requests")).status == 401
    gateway_key = {"Authorization": f"Bearer {KEY_A}"}
    assert (await admin_gateway.get("/admin/requests", headers=gateway_key)).status == 403
    wrong = {"Authorization": "Bearer not-the-admin-token"}
    assert (await admin_gateway.get("/admin/requests", headers=wrong)).status == 401


async def test_log_keeps_only_the_last_n_requests(
    make_gateway: MakeGateway, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_REQUEST_LOG_SIZE", "5")
    gateway = await make_gateway(admin={"token_sha256": sha(ADMIN)}, storage={"url": store_url})
    for _ in range(12):
        await send(gateway, KEY_A)
    rows = await listed(gateway, "?limit=5", want=5)
    assert len(rows) == 5
    await asyncio.sleep(0.1)
    # Redis trims `MAXLEN ~` by whole nodes (100 entries by default); the memory store exactly.
    assert await gateway.app[STORE].xlen(STREAM_KEY) <= 5 + 100
    resp = await gateway.get("/admin/requests?limit=6", headers=ADMIN_AUTH)
    assert resp.status == 400


async def test_replicas_sharing_a_store_see_each_others_requests(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    config = {"admin": {"token_sha256": sha(ADMIN)}, "storage": {"url": redis_url}}
    first, second = await make_gateway(**config), await make_gateway(**config)
    await send(first, KEY_A)
    await send(second, KEY_B)
    rows = await listed(first, want=2)
    assert sorted(r["key"] for r in rows) == ["team-a", "team-b"]


async def test_strings_a_client_chooses_are_cut_short_in_the_list(admin_gateway: Client) -> None:
    model, path = "m" * 250, "/v1/" + "p" * 300  # a model name may have 256 characters
    auth = {"Authorization": f"Bearer {KEY_A}"}
    sent = await admin_gateway.post(path, json={**CHAT, "model": model}, headers=auth)
    await sent.read()
    assert await admin_gateway.app[DRAIN].wait_idle(5)
    row = (await listed(admin_gateway))[0]
    assert row["model"] == model[:200]
    assert row["path"] == path[:200]
    assert row["key"] == "team-a"


async def test_a_stream_cut_after_its_usage_report_is_billed_from_it(
    admin_gateway: Client,
) -> None:
    """The usage chunk (the one the gateway asks for) arrived; [DONE] did not."""
    stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    headers = {"Authorization": f"Bearer {KEY_A}", "x-mock-reply": "a b", "x-mock-cut-after": "5"}
    resp = await admin_gateway.post("/v1/chat/completions", json=stream, headers=headers)
    events = (await resp.read()).split(b"\n\n")
    usage = next(orjson.loads(e[6:])["usage"] for e in events if b'"usage":{' in e)
    assert await admin_gateway.app[DRAIN].wait_idle(5)
    row = (await listed(admin_gateway))[0]
    assert (row["outcome"], row["cost_source"]) == ("stream_interrupted", "usage")
    reported = (usage["prompt_tokens"], usage["completion_tokens"])
    assert (row["input_tokens"], row["output_tokens"]) == reported


async def test_a_cut_stream_is_listed_with_the_tokens_it_was_billed_for(
    admin_gateway: Client,
) -> None:
    stream = {**CHAT, "stream": True}
    headers = {"Authorization": f"Bearer {KEY_A}", "x-mock-reply": "a b c", "x-mock-cut-after": "3"}
    resp = await admin_gateway.post("/v1/chat/completions", json=stream, headers=headers)
    await resp.read()
    assert await admin_gateway.app[DRAIN].wait_idle(5)
    row = (await listed(admin_gateway))[0]
    assert (row["outcome"], row["cost_source"]) == ("stream_interrupted", "estimate")
    assert row["output_tokens"] == 3  # one per event delivered
    assert row["input_tokens"] is not None


@pytest.mark.parametrize("status", ["500", "400"])
async def test_an_unpriced_model_costs_nothing_when_the_provider_refuses(
    admin_gateway: Client, status: str
) -> None:
    unpriced = {**CHAT, "model": "mystery-model"}
    headers = {"Authorization": f"Bearer {KEY_A}", "x-mock-status": status}
    resp = await admin_gateway.post("/v1/chat/completions", json=unpriced, headers=headers)
    assert resp.status == int(status)
    assert resp.headers["x-gateway-cost-usd"] == "0.000000"
    assert await admin_gateway.app[DRAIN].wait_idle(5)
    row = (await listed(admin_gateway))[0]
    assert (row["cost_usd"], row["cost_source"]) == ("0.000000", "none")
    answered = await admin_gateway.post(
        "/v1/chat/completions", json=unpriced, headers={"Authorization": f"Bearer {KEY_A}"}
    )
    assert answered.headers["x-gateway-cost-usd"] == "0.050000"  # answered: billed flat


async def test_a_client_that_left_before_any_answer_is_listed_as_499(
    admin_gateway: Client,
) -> None:
    """As the metrics count it; and so the status filters find it."""
    headers = {"Authorization": f"Bearer {KEY_A}", "x-mock-latency-ms": "2000"}
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await admin_gateway.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert await admin_gateway.app[DRAIN].wait_idle(5)
    for query in ("?status=499", "?status=error", "?status=4xx"):
        rows = await listed(admin_gateway, query)
        assert [(r["status"], r["outcome"]) for r in rows] == [(499, "client_disconnected")]

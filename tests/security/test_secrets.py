"""Secrets never leave their side: a canary provider key, gateway key and admin token never
appear in a response (body, header, SSE event), a log line at any level, a metric, a cache
entry or the request log, even when the provider echoes the request's headers."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import parse_config
from gateway.mock import create_mock_app
from gateway.mock.state import MOCK_STATE
from tests.conftest import base_config, sha

Client = TestClient[Any, Any]
TAG = secrets.token_hex(12)  # what a leak of any canary, even a part, would show
PROVIDER = f"sk-canary-provider-{TAG}p"
GATEWAY = f"gk-canary-gateway-{TAG}g"
ADMIN = f"admin-canary-{TAG}a"
CHAT = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {
    "model": "claude-haiku-4-5",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "hi"}],
}


ECHO = {"x-mock-echo-headers": "1", "Cache-Control": "no-cache"}


def _asking(text: str) -> dict[str, Any]:
    """A request of its own (the cache answers a repeated one without asking the provider)."""
    return {**CHAT, "messages": [{"role": "user", "content": text}]}


async def _dump_store(url: str) -> bytes:
    """Every key and every value in the store, whatever its type."""
    client = aioredis.Redis.from_url(url)
    out = []
    try:
        async for key in client.scan_iter(count=1000):
            kind = (await client.type(key)).decode()
            out.append(key)
            if kind == "string":
                out.append(await client.get(key) or b"")
            elif kind == "hash":
                out += [b"%s=%s" % kv for kv in (await client.hgetall(key)).items()]
            elif kind == "list":
                out += await client.lrange(key, 0, -1)
            elif kind == "set":
                out += list(await client.smembers(key))
            elif kind == "zset":
                out += [m for m, _ in await client.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                for _, fields in await client.xrange(key):
                    out += [b"%s=%s" % kv for kv in fields.items()]
    finally:
        await client.aclose()
    return b"\n".join(out)


async def test_canary_secrets_appear_nowhere_after_every_kind_of_traffic(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[Client]],
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = await aiohttp_server(create_mock_app(api_key=PROVIDER))
    mock_url = str(provider.make_url("")).rstrip("/")
    data = base_config(
        mock_url,
        storage={"url": redis_url},
        admin={"token_sha256": sha(ADMIN)},
        keys=[
            {
                "name": "canary",
                "key_sha256": sha(GATEWAY),
                "routes": ["*"],
                "budget": {"usd_per_month": 10},
                "rate_limit": {"rpm": 1000},
            }
        ],
    )
    for route in data["routes"]:
        route["cache"] = {"ttl_s": 60}
        route["retry"] = {"attempts": 2, "base_s": 0.01, "max_s": 0.01}
    for section in data["providers"].values():
        section["api_key"] = PROVIDER
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with structlog.testing.capture_logs() as logs:
        gateway = await aiohttp_client(create_app(parse_config(data, "<test>")))
        bearer = {"Authorization": f"Bearer {GATEWAY}"}
        x_api_key = {"x-api-key": GATEWAY, "anthropic-version": "2023-06-01"}
        exchanges: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
            ("POST", "/v1/chat/completions", CHAT, bearer),
            ("POST", "/v1/chat/completions", CHAT, bearer),  # a cache hit
            ("POST", "/v1/chat/completions", {**CHAT, "stream": True}, bearer),
            ("POST", "/v1/messages", MESSAGES, x_api_key),
            ("POST", "/v1/messages", {**MESSAGES, "stream": True}, x_api_key),
            ("POST", "/v1/chat/completions", _asking("echo"), {**bearer, **ECHO}),
            ("POST", "/v1/messages", MESSAGES, {**x_api_key, **ECHO}),
            ("POST", "/v1/chat/completions", _asking("fail"), {**bearer, "x-mock-status": "500"}),
            ("POST", "/v1/chat/completions", _asking("both"), {**bearer, "x-api-key": GATEWAY}),
            ("POST", "/v1/chat/completions", CHAT, {"Authorization": f"Bearer {GATEWAY}x"}),
            ("GET", "/v1/models", {}, bearer),
            ("GET", "/admin/keys", {}, {"Authorization": f"Bearer {ADMIN}"}),
            ("GET", "/admin/stats", {}, {"Authorization": f"Bearer {ADMIN}"}),
            ("GET", "/admin/requests", {}, {"Authorization": f"Bearer {ADMIN}"}),
            ("GET", "/admin/keys", {}, bearer),
            ("GET", "/readyz", {}, {}),
            ("GET", "/metrics", {}, {}),
        ]
        for method, path, body, headers in exchanges:
            resp = await gateway.request(method, path, json=body or None, headers=headers)
            seen.append(f"{resp.status} {dict(resp.headers)} {await resp.text()}")
        await asyncio.sleep(0.3)  # the request log is written after each answer
        store = await _dump_store(redis_url)
    received = provider.app[MOCK_STATE].requests
    assert any(PROVIDER in str(r.headers) for r in received)  # the key did go upstream
    assert b"gw:cache:" in store  # the scan saw real data: cache entries ...
    assert b"llmgw:requests" in store  # ... and the request log
    echoes = [text for text in seen if "mock echo" in text]
    assert len(echoes) == 2
    assert all("[redacted]" in text for text in echoes)  # the provider did echo its key
    assert [text[:3] for text in seen[7:10]] == ["500", "200", "401"]
    places = {
        "responses": "\n".join(seen),
        "structlog": repr(logs),
        "stdlib logs": caplog.text,
        "store": store.decode(errors="replace"),
    }
    for where, text in places.items():
        assert TAG not in text, f"a canary secret leaked into {where}"
    assert sha(GATEWAY) not in places["store"]  # not even the key's hash is stored
    for r in received:  # nor did the gateway key reach the provider
        assert TAG not in str(r.headers).replace(PROVIDER, "")
        assert TAG not in r.body.decode(errors="replace")

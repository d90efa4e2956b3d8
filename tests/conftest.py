"""Shared fixtures: the mock provider, gateway configs and apps, the real Redis."""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config
from gateway.mock import MOCK_STATE, MockState, create_mock_app
from tests.processes import RedisClusterNodes, redis_cluster_nodes

KEY_A = "gk-test-team-a"  # may use every route
KEY_B = "gk-test-team-b"  # may use the "chat" route only
PROVIDER_KEY = "sk-provider-canary-5f1d"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(autouse=True, scope="module")
def _earlier_modules_frozen() -> None:
    """What earlier test modules left in this process is moved out of the collector's reach.

    After a few hundred tests a full collection of that took up to a second, and could land
    inside any test that times the gateway it runs in-process (a deadline, a retry's wait);
    frozen at each module's start, the longest collection of a full run is under 0.2 s.
    """
    gc.freeze()


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def base_config(mock_url: str, **overrides: Any) -> dict[str, Any]:
    """A config in front of the mock provider; `overrides` replace top-level sections."""
    data: dict[str, Any] = {
        "providers": {
            "openai": {"kind": "openai", "base_url": f"{mock_url}/v1", "api_key": PROVIDER_KEY},
            "anthropic": {"kind": "anthropic", "base_url": mock_url, "api_key": PROVIDER_KEY},
        },
        "routes": [
            {
                "name": "chat",
                "match": {"path": "/v1/chat/completions", "model": "gpt-4o*"},
                "provider": "openai",
            },
            {
                "name": "cheap",
                "match": {"path": "/v1/chat/completions", "model": "cheap-*"},
                "provider": "openai",
                "model": "gpt-4o-mini",
            },
            {"name": "openai", "match": {"path": "/v1/*"}, "provider": "openai"},
            {
                "name": "claude",
                "match": {"path": "/v1/messages*", "model": "claude-*"},
                "provider": "anthropic",
            },
        ],
        "keys": [
            {"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"]},
            {"name": "team-b", "key_sha256": sha(KEY_B), "routes": ["chat"]},
        ],
    }
    data.update(overrides)
    return data


@pytest.fixture
async def mock_server(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(create_mock_app(api_key=PROVIDER_KEY))


@pytest.fixture
def mock(mock_server: TestServer) -> MockState:
    return mock_server.app[MOCK_STATE]


@pytest.fixture
def mock_url(mock_server: TestServer) -> str:
    return str(mock_server.make_url("")).rstrip("/")


@pytest.fixture
def make_config(mock_url: str) -> Callable[..., GatewayConfig]:
    def make(**overrides: Any) -> GatewayConfig:
        return parse_config(base_config(mock_url, **overrides), "<test>")

    return make


@pytest.fixture
async def make_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    make_config: Callable[..., GatewayConfig],
) -> Callable[..., Awaitable[TestClient[Any, Any]]]:
    """A test client for a gateway app; keyword arguments override config sections."""

    async def make(**overrides: Any) -> TestClient[Any, Any]:
        return await aiohttp_client(create_app(make_config(**overrides)))

    return make


@pytest.fixture
async def gateway(
    make_gateway: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> TestClient[Any, Any]:
    return await make_gateway()


@dataclass(frozen=True)
class Stack:
    """A gateway listening on a real loopback port, in front of the mock provider."""

    url: str
    key: str
    mock_url: str
    mock: MockState
    app: web.Application


@pytest.fixture
async def gateway_stack(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    make_config: Callable[..., GatewayConfig],
    mock_url: str,
    mock: MockState,
) -> AsyncIterator[Stack]:
    server = await aiohttp_server(create_app(make_config()))
    return Stack(
        url=str(server.make_url("")).rstrip("/"),
        key=KEY_A,
        mock_url=mock_url,
        mock=mock,
        app=server.app,
    )


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """The real Redis (a database of the tests' own, emptied before and after).

    Skipped when Redis is not reachable, unless REQUIRE_REDIS=1 (as in CI), where it fails.
    """
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(f"REQUIRE_REDIS=1 but Redis at {REDIS_URL} is unreachable: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable")
    await client.flushdb()
    yield REDIS_URL
    await client.flushdb()
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Runs a test once on the embedded store and once on the real Redis."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    """A 3-master Redis Cluster on spare loopback ports, torn down afterwards."""
    with redis_cluster_nodes(tmp_path) as cluster:
        yield cluster

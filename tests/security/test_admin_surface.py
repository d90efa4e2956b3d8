"""The admin surface: every route off the public list needs the admin token, and the admin
API can live on its own loopback address, where it is the only thing served."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from gateway.dialects import ANTHROPIC, OPENAI
from tests.conftest import KEY_A, sha
from tests.processes import free_port
from tests.security.serving import serve_gateway

Client = TestClient[Any, Any]
ADMIN = "admin-token-surface"
# Served to anyone: probes, the scrape, the proxy itself (which needs a gateway key), and the
# admin page, which holds no data (its script asks the API, with the token, for everything).
# The proxy is its catch-all and the model endpoints' own routes.
PUBLIC = frozenset(
    {"/healthz", "/readyz", "/metrics", "/v1/{tail}", "/admin"}
    | OPENAI.model_endpoints
    | ANTHROPIC.model_endpoints
)


def _private_routes(client: Client) -> list[tuple[str, str]]:
    found = []
    for route in client.server.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path not in PUBLIC:
            found.append((route.method, path))
    return found


async def test_every_route_off_the_public_list_is_401_without_token_and_403_for_a_gateway_key(
    make_gateway: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_gateway(admin={"token_sha256": sha(ADMIN)})
    routes = _private_routes(client)
    assert ("POST", "/admin/reload") in routes
    assert ("GET", "/admin/keys") in routes
    for method, path in routes:
        anonymous = await client.request(method, path)
        assert anonymous.status == 401, (method, path)
        gateway_key = await client.request(
            method, path, headers={"Authorization": f"Bearer {KEY_A}"}
        )
        assert gateway_key.status == 403, (method, path)
        admin = await client.request(method, path, headers={"Authorization": f"Bearer {ADMIN}"})
        assert admin.status not in (401, 403), (method, path)


async def test_without_an_admin_token_configured_the_admin_api_refuses_everyone(
    make_gateway: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_gateway()
    for method, path in _private_routes(client):
        resp = await client.request(method, path, headers={"Authorization": f"Bearer {ADMIN}"})
        assert resp.status == 401, (method, path)


async def test_admin_on_its_own_address_is_404_on_the_public_one_and_serves_nothing_else(
    mock_url: str,
) -> None:
    admin_port = free_port()
    admin = {"token_sha256": sha(ADMIN), "listen": {"host": "127.0.0.1", "port": admin_port}}
    token = {"Authorization": f"Bearer {ADMIN}"}
    async with serve_gateway(mock_url, admin=admin) as served, aiohttp.ClientSession() as s:
        admin_url = f"http://127.0.0.1:{admin_port}"
        for path in ("/admin", "/admin/keys", "/admin/stats", "/admin/requests"):
            async with s.get(served.url + path, headers=token) as public:
                assert public.status == 404, path
        async with s.post(served.url + "/admin/reload", headers=token) as public:
            assert public.status == 404
        async with s.get(admin_url + "/admin/keys") as anonymous:
            assert anonymous.status == 401
        async with s.get(admin_url + "/admin/keys", headers=token) as allowed:
            assert allowed.status == 200
        async with s.get(admin_url + "/admin") as page:
            assert page.status == 200
        for path in ("/healthz", "/metrics", "/v1/models"):
            async with s.get(admin_url + path, headers=token) as other:
                assert other.status == 404, path
        async with s.get(served.url + "/readyz") as ready:
            assert ready.status == 200

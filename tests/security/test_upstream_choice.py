"""No client-chosen upstream: body fields and headers that would choose it are refused, a
provider's redirect is not followed, and a provider URL pointing back at the gateway itself is
refused when the config is loaded or reloaded."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import ConfigError, load_config, parse_config
from gateway.mock import MockState, create_mock_app
from gateway.mock.state import MOCK_STATE
from gateway.reload import CONFIG_SOURCE, ConfigSource
from gateway.sites import check_listen
from gateway.stages import body as body_stage
from tests.conftest import KEY_A, base_config, sha
from tests.processes import free_port, write_config

Client = TestClient[Any, Any]
AUTH = {"Authorization": f"Bearer {KEY_A}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
ADMIN = "admin-token-upstream"


@pytest.mark.parametrize(
    "field", ["api_base", "base_url", "api_key", "azure_endpoint", "proxy_host", "Custom_Base_URL"]
)
async def test_body_field_choosing_the_upstream_is_400_and_nothing_is_sent(
    gateway: Client, mock: MockState, field: str
) -> None:
    resp = await gateway.post(
        "/v1/chat/completions", json={**CHAT, field: "http://evil.example"}, headers=AUTH
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "upstream_override_refused"
    assert mock.requests == []


@pytest.mark.parametrize("header", ["x-base-url", "api-base", "x-upstream-url", "X-Target-URL"])
async def test_header_choosing_the_upstream_is_400_and_nothing_is_sent(
    gateway: Client, mock: MockState, header: str
) -> None:
    resp = await gateway.post(
        "/v1/chat/completions", json=CHAT, headers={**AUTH, header: "http://evil.example"}
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_override_refused"
    assert f"'{header}'" in error["message"]  # named as the client spelt it
    assert mock.requests == []


def test_no_field_of_the_apis_served_is_taken_for_one_choosing_the_upstream() -> None:
    """The fields passed without a look at their spelling are none that the rule refuses."""
    for field in body_stage._API_FIELDS:
        assert field.lower() not in body_stage._UPSTREAM_FIELDS, field
        assert not field.lower().endswith(body_stage._UPSTREAM_SUFFIXES), field


async def test_provider_redirect_is_502_and_its_target_never_sees_a_request(
    gateway: Client, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    elsewhere = await aiohttp_server(create_mock_app())
    target = str(elsewhere.make_url("/v1/chat/completions"))
    resp = await gateway.post(
        "/v1/chat/completions", json=CHAT, headers={**AUTH, "x-mock-redirect": target}
    )
    assert resp.status == 502
    assert "does not follow redirects" in (await resp.json())["error"]["message"]
    assert elsewhere.app[MOCK_STATE].requests == []


def _looping(base_url: str, **server: Any) -> Any:
    data = base_config("http://provider.example:443")
    data["providers"]["openai"]["base_url"] = base_url
    data["server"] = {"host": "127.0.0.1", "port": 8080, **server}
    return parse_config(data, "<test>")


@pytest.mark.parametrize(
    ("base_url", "listen_host"),
    [
        ("http://127.0.0.1:8080/v1", "127.0.0.1"),
        ("http://localhost:8080/v1", "127.0.0.1"),
        ("http://127.9.9.9:8080/v1", "localhost"),
        ("http://[::1]:8080/v1", "127.0.0.1"),
        ("http://[::ffff:127.0.0.1]:8080/v1", "::1"),
        ("http://LOCALHOST.:8080/v1", "0.0.0.0"),
        ("http://0.0.0.0:8080/v1", "0.0.0.0"),
        ("http://10.1.2.3:8080/v1", "10.1.2.3"),
    ],
)
def test_provider_url_pointing_at_the_gateway_itself_is_refused(
    base_url: str, listen_host: str
) -> None:
    with pytest.raises(ConfigError, match="points at this gateway itself"):
        check_listen(_looping(base_url, host=listen_host), "gw.yaml")


@pytest.mark.parametrize(
    ("base_url", "listen_host"),
    [
        ("http://127.0.0.1:8081/v1", "127.0.0.1"),  # another port on this machine
        ("http://10.1.2.3:8080/v1", "127.0.0.1"),  # the same port elsewhere
        ("https://api.openai.com/v1", "0.0.0.0"),
        ("http://10.1.2.3:8080/v1", "10.9.9.9"),
    ],
)
def test_provider_url_elsewhere_is_accepted(base_url: str, listen_host: str) -> None:
    check_listen(_looping(base_url, host=listen_host), "gw.yaml")


def test_provider_url_pointing_at_the_admin_address_is_refused() -> None:
    config = _looping("http://127.0.0.1:9091/v1")
    config = config.model_copy(
        update={
            "admin": parse_config(
                {
                    **base_config("http://x:1"),
                    "admin": {"token_sha256": "0" * 64, "listen": {"port": 9091}},
                },
                "<test>",
            ).admin
        }
    )
    with pytest.raises(ConfigError, match=r"listens on 127\.0\.0\.1:9091"):
        check_listen(config, "gw.yaml")


def test_gateway_serve_refuses_a_looping_provider_at_start_with_a_clear_error(
    tmp_path: Path,
) -> None:
    port = free_port()
    data = base_config(f"http://localhost:{port}")
    path = write_config(tmp_path, data)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert f"{path}: providers.anthropic.base_url: http://localhost:{port} " in done.stderr
    assert f"points at this gateway itself (it listens on 127.0.0.1:{port})" in done.stderr


async def test_reload_refuses_a_provider_pointing_at_the_gateway_and_keeps_serving(
    tmp_path: Path, mock_url: str, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    port = free_port()
    data = base_config(mock_url, admin={"token_sha256": sha(ADMIN)}, server={"port": port})
    path = write_config(tmp_path, data)
    app: web.Application = create_app(load_config(path))
    app[CONFIG_SOURCE] = ConfigSource(str(path))
    server = await aiohttp_server(app, port=port)
    client: Client = TestClient(server)
    await client.start_server()
    try:
        data["providers"]["openai"]["base_url"] = f"http://127.0.0.1:{port}/v1"
        write_config(tmp_path, data)
        resp = await client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
        assert resp.status == 400
        assert "points at this gateway itself" in (await resp.json())["error"]["message"]
        ok = await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        assert ok.status == 200
    finally:
        await client.close()


async def test_cookies_a_provider_sets_are_not_kept_or_sent_for_other_clients(
    make_gateway: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    """One upstream session serves every client: a cookie the provider set on one client's
    request must not ride along on the next (another client's) request."""
    received: list[str | None] = []

    async def provider(request: web.Request) -> web.Response:
        received.append(request.headers.get("Cookie"))
        response = web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hi"},
                        "finish_reason": "stop",
                    }
                ],
            }
        )
        response.set_cookie("__cf_bm", "session-of-one-client", path="/")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", provider)
    server = await aiohttp_server(app)
    # By name: a cookie jar refuses cookies from a bare IP address.
    url = f"http://localhost:{server.port}/v1"
    providers = {
        "openai": {"kind": "openai", "base_url": url, "api_key": "k"},
        "anthropic": {"kind": "anthropic", "base_url": url, "api_key": "k"},
    }
    gateway = await make_gateway(providers=providers)
    for _ in range(2):
        resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        assert resp.status == 200
    assert received == [None, None]

"""Bad input gets a clear error in the client's dialect, with the right status, never a trace."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.mock import MockState, ScriptStep
from tests.conftest import KEY_A, KEY_B

Client = TestClient[Any, Any]
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
A = {"Authorization": f"Bearer {KEY_A}"}


async def _openai_error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status
    assert resp.headers["x-should-retry"] == "false"
    assert resp.headers["x-request-id"]
    body = await resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


async def test_missing_key_is_401_saying_how_to_send_one(gateway: Client) -> None:
    resp = await gateway.post("/v1/chat/completions", json=CHAT)
    error = await _openai_error(resp, 401)
    assert "Authorization: Bearer" in error["message"]


async def test_unknown_key_is_401_without_echoing_it(gateway: Client, mock: MockState) -> None:
    resp = await gateway.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer gk-wrong-123"}
    )
    error = await _openai_error(resp, 401)
    assert error["code"] == "invalid_api_key"
    assert "gk-wrong-123" not in error["message"]
    assert mock.requests == []


async def test_unknown_key_on_messages_is_401_in_anthropic_shape(gateway: Client) -> None:
    resp = await gateway.post(
        "/v1/messages", json={"model": "claude-x", "messages": []}, headers={"x-api-key": "bad"}
    )
    assert resp.status == 401
    body = await resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"


async def test_route_not_allowed_for_key_is_403(gateway: Client, mock: MockState) -> None:
    resp = await gateway.post(
        "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "x"},
        headers={"Authorization": f"Bearer {KEY_B}"},
    )
    error = await _openai_error(resp, 403)
    assert "team-b" in error["message"]
    assert mock.requests == []


async def test_model_served_by_no_route_is_404_model_not_found(gateway: Client) -> None:
    resp = await gateway.post(
        "/v1/messages",
        json={"model": "gemini-pro", "messages": []},
        headers={"x-api-key": KEY_A},
    )
    assert resp.status == 404
    assert (await resp.json())["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"messages": []}', "needs a 'model' string"),
        (b'{"model": 5, "messages": []}', "needs a 'model' string"),
    ],
)
async def test_bad_body_is_400(gateway: Client, body: bytes, message: str) -> None:
    resp = await gateway.post(
        "/v1/chat/completions", data=body, headers={**A, "Content-Type": "application/json"}
    )
    error = await _openai_error(resp, 400)
    assert message in error["message"]


@pytest.mark.parametrize("field", ["api_base", "base_url", "api_key", "vertex_host"])
async def test_body_field_choosing_upstream_is_400(
    gateway: Client, mock: MockState, field: str
) -> None:
    resp = await gateway.post(
        "/v1/chat/completions", json={**CHAT, field: "http://evil.example"}, headers=A
    )
    error = await _openai_error(resp, 400)
    assert error["param"] == field
    assert mock.requests == []


async def test_header_choosing_upstream_is_400(gateway: Client) -> None:
    resp = await gateway.post(
        "/v1/chat/completions", json=CHAT, headers={**A, "x-base-url": "http://evil.example"}
    )
    assert (await _openai_error(resp, 400))["code"] == "upstream_override_refused"


async def test_body_over_limit_is_413_from_content_length(
    make_gateway: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await make_gateway(server={"max_body_bytes": 1000})
    resp = await gateway.post(
        "/v1/chat/completions",
        data=b"x" * 5000,
        headers={**A, "Content-Type": "application/json"},
    )
    await _openai_error(resp, 413)
    assert mock.requests == []


async def test_chunked_body_over_limit_is_413_while_reading(
    make_gateway: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await make_gateway(server={"max_body_bytes": 1000})

    async def chunks() -> Any:
        for _ in range(50):
            yield b"y" * 100

    resp = await gateway.post("/v1/chat/completions", data=chunks(), headers=A)
    await _openai_error(resp, 413)


async def test_unknown_path_is_404_json(gateway: Client) -> None:
    resp = await gateway.get("/nope")
    error = await _openai_error(resp, 404)
    assert "/nope" in error["message"]


async def test_provider_redirect_is_502_and_not_followed(gateway: Client, mock: MockState) -> None:
    headers = {**A, "x-mock-redirect": "http://127.0.0.1:1/elsewhere"}
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=headers)
    error = await _openai_error(resp, 502)
    assert "redirect" in error["message"]
    assert len(mock.requests) == 1


async def test_unreachable_provider_is_502(
    make_gateway: Callable[..., Awaitable[Client]],
) -> None:
    dead = "http://127.0.0.1:1"
    gateway = await make_gateway(
        providers={
            "openai": {"kind": "openai", "base_url": dead + "/v1"},
            "anthropic": {"kind": "anthropic", "base_url": dead},
        }
    )
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=A)
    error = await _openai_error(resp, 502)
    assert "could not reach provider 'openai'" in error["message"]
    assert dead not in error["message"]


async def test_provider_slower_than_route_deadline_is_504(
    make_gateway: Callable[..., Awaitable[Client]],
    mock: MockState,
    mock_url: str,
) -> None:
    routes = [{"name": "chat", "match": {"path": "/v1/*"}, "provider": "openai", "timeout_s": 0.2}]
    gateway = await make_gateway(
        routes=routes,
        keys=[{"name": "team-a", "key_sha256": _sha(KEY_A), "routes": ["*"]}],
    )
    mock.push([ScriptStep(latency_s=2.0)])
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=A)
    error = await _openai_error(resp, 504)
    assert "0.2s" in error["message"]


def _sha(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()

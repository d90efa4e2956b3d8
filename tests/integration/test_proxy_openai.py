"""OpenAI-format requests through the gateway to the mock provider: pass-through fidelity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.mock import MockState, ScriptStep
from tests.conftest import KEY_A, KEY_B, PROVIDER_KEY, sha

Client = TestClient[Any, Any]
AUTH = {"Authorization": f"Bearer {KEY_A}"}


async def test_chat_completion_reaches_provider_byte_identical_with_provider_key(
    gateway: Client, mock: MockState
) -> None:
    # Odd spacing, a float with a trailing zero and an unknown field: all must survive.
    body = (
        b'{"model": "gpt-4o-mini",  "messages": [{"role": "user", "content": "Hi"}],'
        b' "temperature": 0.50, "x_new_field": {"b": 1, "a": 2}}'
    )
    resp = await gateway.post("/v1/chat/completions", data=body, headers=AUTH)
    assert resp.status == 200
    answer = await resp.json()
    assert answer["choices"][0]["message"]["content"] == "Mock answer: Hi"
    assert answer["usage"]["prompt_tokens"] > 0
    assert len(mock.requests) == 1
    sent = mock.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.body == body
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert KEY_A not in orjson.dumps(sent.headers).decode()


async def test_response_carries_gateway_headers(gateway: Client) -> None:
    resp = await gateway.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
        headers=AUTH,
    )
    assert resp.status == 200
    assert resp.headers["x-gateway-route"] == "chat"
    assert resp.headers["x-gateway-attempts"] == "1"
    assert len(resp.headers["x-request-id"]) == 32
    assert resp.headers["Content-Type"].startswith("application/json")


async def test_client_request_id_is_kept_when_well_formed(gateway: Client) -> None:
    headers = {**AUTH, "x-request-id": "trace-123"}
    resp = await gateway.get("/v1/models", headers=headers)
    assert resp.headers["x-request-id"] == "trace-123"
    bad = await gateway.get("/v1/models", headers={**AUTH, "x-request-id": "a b\tc"})
    assert bad.headers["x-request-id"] != "a b\tc"


async def test_the_providers_request_id_reaches_the_client_beside_the_gateways(
    gateway: Client, mock: MockState
) -> None:
    """OpenAI's support asks for its `x-request-id`; the gateway's own takes that name."""
    mock.push([ScriptStep(headers={"x-request-id": "req_5f1d0c2a"})])
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    resp = await gateway.post("/v1/chat/completions", json=chat, headers=AUTH)
    assert resp.status == 200
    assert resp.headers["x-gateway-upstream-request-id"] == "req_5f1d0c2a"
    assert resp.headers.getall("x-request-id") == [resp.headers["x-request-id"]]
    assert resp.headers["x-request-id"] != "req_5f1d0c2a"


async def test_model_rewrite_changes_only_the_model(gateway: Client, mock: MockState) -> None:
    payload = {"model": "cheap-classifier", "messages": [], "zeta": 1, "alpha": [1, 2]}
    resp = await gateway.post("/v1/chat/completions", json=payload, headers=AUTH)
    assert resp.status == 200
    assert resp.headers["x-gateway-route"] == "cheap"
    upstream = mock.requests[0].json()
    assert upstream == {**payload, "model": "gpt-4o-mini"}
    assert list(upstream) == ["model", "messages", "zeta", "alpha"]


async def test_embeddings_completions_and_responses_pass_through(
    gateway: Client, mock: MockState
) -> None:
    cases = [
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]}),
        ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "Hello"}),
    ]
    for path, payload in cases:
        resp = await gateway.post(path, json=payload, headers=AUTH)
        assert resp.status == 200, path
        assert resp.headers["x-gateway-route"] == "openai"
    embeddings = await (await gateway.post("/v1/embeddings", json=cases[0][1], headers=AUTH)).json()
    assert len(embeddings["data"]) == 2
    assert [r.path for r in mock.requests[:3]] == [c[0] for c in cases]


async def test_models_list_and_other_v1_paths_pass_through(
    gateway: Client, mock: MockState
) -> None:
    models = await gateway.get("/v1/models?limit=5", headers=AUTH)
    assert models.status == 200
    assert "gpt-4o-mini" in {m["id"] for m in (await models.json())["data"]}
    assert mock.requests[0].query == "limit=5"
    unknown = await gateway.get("/v1/files/file-1", headers=AUTH)
    # The provider's own answer (the mock has no files API) comes back unchanged.
    assert unknown.status == 404
    assert (await unknown.json())["error"]["code"] == "unknown_url"
    assert mock.requests[1].path == "/v1/files/file-1"


async def test_provider_error_status_and_body_reach_client(
    gateway: Client, mock: MockState
) -> None:
    # The provider says not to retry: its answer comes back at once, as it sent it.
    headers = {
        **AUTH,
        "x-mock-status": "429",
        "x-mock-retry-after": "7",
        "x-mock-should-retry": "false",
    }
    resp = await gateway.post(
        "/v1/chat/completions", json={"model": "gpt-4o", "messages": []}, headers=headers
    )
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7"
    assert (await resp.json())["error"]["message"] == "mock 429"


async def _echo_of_our_request(gateway: Client) -> str:
    """The provider's 400 that echoes the headers it received, as the client gets it."""
    headers = {**AUTH, "x-mock-echo-headers": "1", "x-mock-status": "400"}
    resp = await gateway.post(
        "/v1/chat/completions", json={"model": "gpt-4o", "messages": []}, headers=headers
    )
    assert resp.status == 400
    return await resp.text()


async def test_provider_echoing_request_headers_never_reveals_provider_key(
    gateway: Client,
) -> None:
    text = await _echo_of_our_request(gateway)
    assert "authorization" in text.lower()  # the echo happened
    assert PROVIDER_KEY not in text
    assert KEY_A not in text


async def test_a_credential_the_config_sends_in_a_header_of_its_own_is_redacted_too(
    make_gateway: Callable[..., Awaitable[Client]], mock_url: str
) -> None:
    """Azure's `api-key`, an organisation id: echoed by the provider, never shown."""
    private = {"api-key": "azure-secret-1234", "OpenAI-Organization": "org-secret-5678"}
    openai = {
        "kind": "openai",
        "base_url": f"{mock_url}/v1",
        "api_key": PROVIDER_KEY,
        "headers": private,
    }
    anthropic = {"kind": "anthropic", "base_url": mock_url, "api_key": PROVIDER_KEY}
    gateway = await make_gateway(providers={"openai": openai, "anthropic": anthropic})
    text = await _echo_of_our_request(gateway)
    assert "api-key: [redacted]" in text.lower()  # the echo happened
    assert "azure-secret-1234" not in text
    assert "org-secret-5678" not in text
    assert PROVIDER_KEY not in text


async def test_a_client_cannot_choose_the_organisation_or_project_of_the_providers_key(
    gateway: Client, mock: MockState
) -> None:
    """The OpenAI SDK sends them from OPENAI_ORG_ID and OPENAI_PROJECT_ID: dropped, not refused."""
    headers = {**AUTH, "OpenAI-Organization": "org-other", "OpenAI-Project": "proj-other"}
    resp = await gateway.post(
        "/v1/chat/completions", json={"model": "gpt-4o", "messages": []}, headers=headers
    )
    assert resp.status == 200
    sent = mock.requests[0].headers
    assert "openai-organization" not in sent
    assert "openai-project" not in sent


@pytest.mark.parametrize(
    ("path", "anthropic"), [("/v1/chat/completions", False), ("/v1/messages", True)]
)
async def test_an_expectation_other_than_100_continue_is_a_417_in_the_dialect(
    gateway: Client, mock: MockState, path: str, anthropic: bool
) -> None:
    body = {"model": "gpt-4o" if not anthropic else "claude-haiku-4-5", "max_tokens": 5}
    body["messages"] = [{"role": "user", "content": "hi"}]
    auth = {"x-api-key": KEY_A} if anthropic else AUTH
    refused = await gateway.post(path, json=body, headers={**auth, "Expect": "x-fast-lane"})
    error = await refused.json()
    assert (refused.status, refused.headers["x-should-retry"]) == (417, "false")
    assert ("type" in error) is anthropic  # Anthropic's shape: {"type": "error", ...}
    assert "x-request-id" in refused.headers
    assert mock.requests == []
    served = await gateway.post(path, json=body, headers={**auth, "Expect": "100-continue"})
    assert served.status == 200


async def test_hop_by_hop_headers_are_not_forwarded_upstream(
    gateway: Client, mock: MockState
) -> None:
    headers = {
        **AUTH,
        "Connection": "keep-alive, X-Secret-Hop",
        "X-Secret-Hop": "1",
        "X-Forwarded-For": "10.0.0.1",
        "X-App-Tag": "kept",
    }
    await gateway.post(
        "/v1/chat/completions", json={"model": "gpt-4o", "messages": []}, headers=headers
    )
    sent = mock.requests[0].headers
    assert "x-secret-hop" not in sent
    assert "x-forwarded-for" not in sent
    assert sent["x-app-tag"] == "kept"


async def test_cost_saving_route_by_header_and_size_sends_short_prompts_to_small_model(
    make_gateway: Any, mock: MockState
) -> None:
    cheap = {
        "name": "classify-cheap",
        "match": {
            "path": "/v1/chat/completions",
            "headers": {"x-gateway-tier": "cheap"},
            "max_body_bytes": 2000,
        },
        "provider": "openai",
        "model": "gpt-4.1-nano",
    }
    default = {"name": "default", "match": {"path": "/v1/*"}, "provider": "openai"}
    keys = [{"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"]}]
    gateway = await make_gateway(routes=[cheap, default], keys=keys)
    short = {"model": "gpt-4o", "messages": [{"role": "user", "content": "spam or ham?"}]}
    long = {**short, "messages": [{"role": "user", "content": "x" * 5000}]}
    tier = {**AUTH, "x-gateway-tier": "cheap"}
    routed = [
        (await gateway.post("/v1/chat/completions", json=body, headers=h)).headers[
            "x-gateway-route"
        ]
        for body, h in [(short, tier), (long, tier), (short, AUTH), (short, tier)]
    ]
    assert routed == ["classify-cheap", "default", "default", "classify-cheap"]
    models = [r.json()["model"] for r in mock.requests]
    assert models == ["gpt-4.1-nano", "gpt-4o", "gpt-4o", "gpt-4.1-nano"]
    assert "x-gateway-tier" not in mock.requests[0].headers


async def test_route_limited_to_named_keys(make_gateway: Any) -> None:
    only_b = {
        "name": "b-only",
        "match": {"keys": ["team-b"]},
        "provider": "openai",
        "model": "gpt-4.1-nano",
    }
    default = {"name": "default", "match": {"path": "/v1/*"}, "provider": "openai"}
    keys = [
        {"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"]},
        {"name": "team-b", "key_sha256": sha(KEY_B), "routes": ["*"]},
    ]
    gateway = await make_gateway(routes=[only_b, default], keys=keys)
    body = {"model": "gpt-4o", "messages": []}
    routed = []
    for key in (KEY_A, KEY_B, KEY_A, KEY_B):  # each key's choice, again once it is known
        resp = await gateway.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        routed.append(resp.headers["x-gateway-route"])
    assert routed == ["default", "b-only", "default", "b-only"]


async def test_a_clients_expect_100_continue_is_answered_by_the_gateway_not_sent_upstream(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    make_gateway: Callable[..., Awaitable[Client]],
) -> None:
    """The gateway reads the whole body before it calls the provider: an `Expect` sent on
    would have it wait for the provider's 100 Continue (a round trip before the body), and,
    from a provider or proxy that never sends one, until the deadline."""
    seen: list[str | None] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Expect"))
        await request.read()
        return web.json_response({"choices": []})

    async def no_interim_answer(request: web.Request) -> None:
        return None  # a server that sends no 100 Continue and waits for the body

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer, expect_handler=no_interim_answer)
    url = str((await aiohttp_server(app)).make_url("/v1")).rstrip("/")
    providers = {
        "openai": {"kind": "openai", "base_url": url},
        "anthropic": {"kind": "anthropic", "base_url": url},
    }
    gateway = await make_gateway(providers=providers)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    headers = {**AUTH, "Expect": "100-continue", "x-gateway-timeout": "3"}
    resp = await gateway.post("/v1/chat/completions", json=body, headers=headers)
    assert resp.status == 200
    assert seen == [None]

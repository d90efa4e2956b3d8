"""Paths: what is routed, authorised and billed is what the provider receives."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import structlog.testing
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway.mock import MockState
from tests.conftest import KEY_A, KEY_B
from tests.security.serving import raw_exchange, serve_gateway, status_of

Client = TestClient[Any, Any]
CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


def _request(method: str, target: str, key: str = KEY_A, body: bytes = b"") -> bytes:
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _body(answer: bytes) -> Any:
    return orjson.loads(answer.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/v1/models/../../_mock/requests"),  # the provider's own paths, with its key
        ("POST", "/v1/models/../chat/completions"),  # another route's endpoint
        ("POST", "/v1/../v1/chat/completions"),  # the same endpoint, unbilled
        ("POST", "/v1/./chat/completions"),
        ("POST", "/v1/%2e%2e/_mock/script"),  # percent-encoded
        ("POST", "/v1/models/%2E%2E/chat/completions"),
        ("GET", "/v1/models/.."),
        ("GET", "/v1/models/..%5C..%5C_mock/requests"),  # a server that splits at backslashes
    ],
)
async def test_a_dot_segment_is_refused_in_the_clients_dialect_and_nothing_is_sent(
    mock_url: str, mock: MockState, method: str, target: str
) -> None:
    async with serve_gateway(mock_url) as served:
        answer = await raw_exchange(served.port, _request(method, target, body=CHAT))
    assert status_of(answer) == 400
    error = _body(answer)["error"]
    assert error["code"] == "invalid_path"
    assert "'..' segment" in error["message"]
    assert b"x-request-id" in answer.lower()
    assert mock.requests == []


async def test_a_dot_segment_on_the_anthropic_endpoint_is_refused_in_its_dialect(
    mock_url: str, mock: MockState
) -> None:
    async with serve_gateway(mock_url) as served:
        answer = await raw_exchange(
            served.port, _request("POST", "/v1/messages/../messages", body=b"{}")
        )
    assert status_of(answer) == 400
    body = _body(answer)
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert mock.requests == []


async def test_a_key_limited_to_one_route_cannot_reach_another_through_dot_segments(
    mock_url: str, mock: MockState
) -> None:
    embeddings = orjson.dumps({"model": "text-embedding-3-small", "input": "x"})
    async with serve_gateway(mock_url) as served:
        refused = await raw_exchange(
            served.port, _request("POST", "/v1/embeddings", KEY_B, embeddings)
        )
        dotted = await raw_exchange(
            served.port,
            _request("POST", "/v1/chat/completions/../../v1/embeddings", KEY_B, embeddings),
        )
    assert status_of(refused) == 403
    assert status_of(dotted) == 400
    assert mock.requests == []


async def test_an_encoded_question_mark_stays_in_the_path_it_was_sent_in(
    gateway: Client, mock: MockState
) -> None:
    """The provider gets the path as the client encoded it: `%3F` is part of the model id,
    not the start of a query string the client never sent."""
    url = URL("/v1/models/ft%3Amodel%3Fowner=x?limit=2", encoded=True)
    resp = await gateway.get(url, headers={"Authorization": f"Bearer {KEY_A}"})
    await resp.read()
    sent = mock.requests[-1]
    assert (sent.path, sent.query) == ("/v1/models/ft:model?owner=x", "limit=2")


async def test_an_error_off_the_api_paths_follows_the_anthropic_version_header(
    gateway: Client,
) -> None:
    resp = await gateway.get("/foo", headers={"anthropic-version": "2023-06-01"})
    assert resp.status == 404
    body = await resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    plain = await (await gateway.get("/foo")).json()
    assert plain["error"]["code"] == "unknown_url"


async def test_a_method_that_echoes_the_request_is_refused_and_never_forwarded(
    gateway: Client, mock: MockState
) -> None:
    """Forwarded, a TRACE would come back holding the request as the provider received it:
    with the provider's key."""
    resp = await gateway.request(
        "TRACE", "/v1/models", headers={"Authorization": f"Bearer {KEY_A}"}
    )
    assert resp.status == 405
    assert "POST" in resp.headers["Allow"]
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    assert mock.requests == []


async def test_a_request_refused_before_any_route_is_logged_in_one_line(
    mock_url: str,
) -> None:
    """The proxy's requests have their request line; these never reach it."""
    with structlog.testing.capture_logs() as logs:
        async with serve_gateway(mock_url) as served:
            unknown = await raw_exchange(served.port, _request("GET", "/nonv1/x"))
            dotted = await raw_exchange(served.port, _request("GET", "/v1/models/../x"))
            proxied = await raw_exchange(served.port, _request("GET", "/v1/models", "wrong"))
    assert [status_of(a) for a in (unknown, dotted, proxied)] == [404, 400, 401]
    refused = [(e["path"], e["status"], e["error_code"]) for e in logs if e["event"] == "refused"]
    assert refused == [("/nonv1/x", 404, "unknown_url"), ("/v1/models/../x", 400, "invalid_path")]
    assert all(e["request_id"] for e in logs if e["event"] == "refused")

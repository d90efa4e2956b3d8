"""HTTP hygiene: hop-by-hop headers stripped both ways, body limits (compressed too), parser
limits, and headers a client may not use to speak for the gateway or for a proxy."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from aiohttp.test_utils import TestClient

from gateway.mock import MockState, ScriptStep
from gateway.server_limits import quiet_malformed_requests
from tests.conftest import KEY_A
from tests.security.serving import raw_exchange, serve_gateway, status_of

Client = TestClient[Any, Any]
AUTH = {"Authorization": f"Bearer {KEY_A}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
LIMIT = 100_000


async def test_hop_by_hop_and_connection_named_request_headers_do_not_reach_the_provider(
    gateway: Client, mock: MockState
) -> None:
    sent = {
        "Connection": "keep-alive, X-Hop-Secret",
        "X-Hop-Secret": "drop-me-1",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic drop-me-2",
        "TE": "trailers",
        "Trailer": "X-Drop-Me-3",
    }
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers={**AUTH, **sent})
    assert resp.status == 200
    received = mock.requests[-1].headers
    for name in ("x-hop-secret", "keep-alive", "proxy-authorization", "te", "trailer"):
        assert name not in received
    assert "drop-me" not in str(received).lower()


async def test_hop_by_hop_and_connection_named_response_headers_do_not_reach_the_client(
    gateway: Client, mock: MockState
) -> None:
    mock.push(
        [
            ScriptStep(
                headers={
                    "Connection": "X-Provider-Hop",
                    "X-Provider-Hop": "drop-me",
                    "Keep-Alive": "timeout=9",
                    "Proxy-Authenticate": "Basic realm=provider",
                    "X-Kept": "yes",
                }
            )
        ]
    )
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    assert resp.headers["X-Kept"] == "yes"  # an end-to-end header still crosses
    for name in ("X-Provider-Hop", "Keep-Alive", "Proxy-Authenticate"):
        assert name not in resp.headers


@pytest.mark.parametrize("stream", [False, True])
async def test_a_providers_x_gateway_headers_never_reach_the_client(
    gateway: Client, mock: MockState, stream: bool
) -> None:
    """Another gateway upstream (this one, say) sends its own: its cost, its cache result, the
    budget left to the key this gateway holds. The client would take them for this
    gateway's (a stream's cost and a key without a budget get none of this gateway's)."""
    provider = {
        "x-gateway-cost-usd": "0.000001",
        "x-gateway-cache": "HIT",
        "x-gateway-budget-remaining-usd": "999.000000",
        "x-gateway-route": "upstream-route",
        "x-gateway-anything": "upstream",
    }
    mock.push([ScriptStep(headers=provider)])
    body = {**CHAT, "stream": stream}
    resp = await gateway.post("/v1/chat/completions", json=body, headers=AUTH)
    await resp.read()
    assert resp.status == 200
    shown = {k.lower(): v for k, v in resp.headers.items() if k.lower().startswith("x-gateway-")}
    assert not set(shown.values()) & set(provider.values())
    assert shown["x-gateway-route"] == "chat"
    assert "x-gateway-budget-remaining-usd" not in shown  # team-a has no budget
    assert ("x-gateway-cost-usd" in shown) is not stream


async def test_body_over_the_limit_is_refused_413_before_it_is_sent(
    mock_url: str, mock: MockState
) -> None:
    async with serve_gateway(mock_url, server={"max_body_bytes": LIMIT}) as served:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
            f"Authorization: Bearer {KEY_A}\r\nContent-Type: application/json\r\n"
            "Content-Length: 50000000\r\n\r\n"
        )
        started = time.monotonic()
        answer = await raw_exchange(served.port, head.encode())  # no body is ever sent
    assert status_of(answer) == 413
    assert time.monotonic() - started < 2
    assert mock.requests == []


async def test_gzip_body_that_inflates_past_the_limit_is_413(
    make_gateway: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await make_gateway(server={"max_body_bytes": LIMIT})
    huge = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": "a" * 20_000_000}]})
    bomb = gzip.compress(huge)
    assert len(bomb) < LIMIT  # small on the wire
    resp = await gateway.post(
        "/v1/chat/completions",
        data=bomb,
        headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "request_too_large"
    assert mock.requests == []


async def test_gzip_body_within_the_limit_reaches_the_provider_inflated(
    gateway: Client, mock: MockState
) -> None:
    resp = await gateway.post(
        "/v1/chat/completions",
        data=gzip.compress(orjson.dumps(CHAT)),
        headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status == 200
    received = mock.requests[-1]
    assert received.json() == CHAT
    assert "content-encoding" not in received.headers


@pytest.mark.parametrize(
    ("encoding", "status"), [("gzip", 400), ("compress", 415), ("gzip, gzip", 415)]
)
async def test_body_in_a_broken_or_unknown_encoding_is_refused_not_a_500(
    gateway: Client, mock: MockState, encoding: str, status: int
) -> None:
    resp = await gateway.post(
        "/v1/chat/completions",
        data=b"not compressed at all",
        headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": encoding},
    )
    assert resp.status == status
    assert mock.requests == []


SECRET = b"gk-must-not-be-logged"


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Api-Key: " + SECRET + b"a" * 9000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n"
        + b"".join(b"X-Many-%d: 1\r\n" % i for i in range(110))  # over 100, under aiohttp's 128
        + b"\r\n",
        b"GET /" + SECRET + b"a" * 9000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Api-Key: " + SECRET + b"\x00\r\n\r\n",
    ],
    ids=["field-too-long", "too-many-headers", "line-too-long", "nul-byte"],
)
async def test_oversized_or_malformed_headers_are_400_and_quote_no_secret_in_the_log(
    mock_url: str, request_head: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    quiet_malformed_requests()  # as every gateway runner does
    async with serve_gateway(mock_url) as served:
        answer = await raw_exchange(served.port, request_head)
    assert status_of(answer) == 400
    assert SECRET.decode() not in caplog.text
    assert "Traceback" not in caplog.text
    # The gateway's own error, not the parser's plain text quoting the request.
    head, body = answer.split(b"\r\n\r\n", 1)
    assert SECRET not in answer
    assert b"content-type: application/json" in head.lower()
    assert b"x-request-id: " in head.lower()
    assert b"server: llm-gateway" in head.lower()
    error = orjson.loads(body)["error"]
    assert error["code"] in ("request_too_long", "malformed_request")
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("encoding", "decodable"), [("br", HAS_BROTLI), ("zstd", HAS_ZSTD)], ids=["br", "zstd"]
)
async def test_an_encoding_the_server_has_no_decoder_for_is_415_in_json(
    mock_url: str,
    mock: MockState,
    encoding: str,
    decodable: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp knows these encodings but decodes them only with an optional package; without
    it, the parser itself refuses the request, before any handler."""
    body = b"not compressed at all"
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
        f"Authorization: Bearer {KEY_A}\r\nContent-Type: application/json\r\n"
        f"Content-Encoding: {encoding}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    async with serve_gateway(mock_url) as served:
        answer = await raw_exchange(served.port, head.encode() + body)
    error = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    if decodable:  # a decoder is installed: the body does not decode
        assert (status_of(answer), error["code"]) == (400, "invalid_request")
    else:
        assert (status_of(answer), error["code"]) == (415, "unsupported_content_encoding")
    assert mock.requests == []
    assert "Traceback" not in caplog.text


async def test_client_sent_internal_headers_are_ignored_and_never_reach_the_provider(
    gateway: Client, mock: MockState
) -> None:
    forged = {
        "x-gateway-route": "admin",
        "x-gateway-cache": "HIT",
        "x-gateway-cost-usd": "0",
        "x-gateway-attempts": "99",
        "x-gateway-budget-remaining-usd": "1000000",
        "x-gateway-key": "team-b",
    }
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers={**AUTH, **forged})
    assert resp.status == 200
    assert resp.headers["x-gateway-route"] == "chat"
    assert resp.headers["x-gateway-attempts"] == "1"
    assert float(resp.headers["x-gateway-cost-usd"]) > 0
    assert "x-gateway-budget-remaining-usd" not in resp.headers  # team-a has no budget
    assert not [n for n in mock.requests[-1].headers if n.startswith("x-gateway-")]


async def test_forwarding_headers_from_a_client_are_not_trusted_or_passed_on(
    gateway: Client, mock: MockState
) -> None:
    forwarded = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "Forwarded": "for=203.0.113.7;host=evil.example;proto=https",
        "X-Real-IP": "203.0.113.7",
    }
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers={**AUTH, **forwarded})
    assert resp.status == 200
    received = mock.requests[-1].headers
    assert "203.0.113.7" not in str(received)
    assert "evil.example" not in str(received)
    assert received["host"].startswith("127.0.0.1:")  # the provider's own host


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("GET", "/healthz", {}, None, 200),
        ("GET", "/metrics", {}, None, 200),
        ("GET", "/nowhere", {}, None, 404),
        ("GET", "/admin/keys", {}, None, 401),
        ("POST", "/v1/chat/completions", {}, CHAT, 401),
        ("POST", "/v1/chat/completions", AUTH, CHAT, 200),
        ("POST", "/v1/chat/completions", AUTH, {**CHAT, "stream": True}, 200),
        ("POST", "/v1/chat/completions/", AUTH, CHAT, 404),
        ("POST", "/v1/chat/completions", AUTH, {"messages": []}, 400),
        ("TRACE", "/v1/chat/completions", AUTH, None, 405),
    ],
)
async def test_every_response_names_the_gateway_and_the_request_not_the_framework(
    gateway: Client,
    method: str,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any] | None,
    status: int,
) -> None:
    """Buffered or streamed, answered or refused, by the proxy, the router or the admin API."""
    resp = await gateway.request(method, path, json=body, headers=headers)
    await resp.read()
    assert resp.status == status
    assert resp.headers["Server"] == "llm-gateway"
    assert len(resp.headers["x-request-id"]) == 32
    if status == 200 and path.startswith("/v1/"):
        assert resp.headers["x-gateway-route"]  # the route's own, streamed or not


async def test_slow_body_gets_408_after_the_body_deadline(mock_url: str, mock: MockState) -> None:
    async with serve_gateway(mock_url, server={"body_timeout_s": 0.5}) as served:

        async def trickle() -> Any:
            yield b'{"model": "gpt-4o-mini", '
            await asyncio.sleep(3)
            yield b'"messages": []}'

        started = time.monotonic()
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{served.url}/v1/chat/completions", data=trickle(), headers=AUTH) as r,
        ):
            assert r.status == 408
            assert (await r.json())["error"]["code"] == "request_timeout"
        assert time.monotonic() - started < 2.5
    assert mock.requests == []

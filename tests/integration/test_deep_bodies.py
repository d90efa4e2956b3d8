"""A body nested more deeply than the gateway can write JSON again is refused with a 400 in the
client's dialect wherever the gateway has to write it (a cache key, the stream usage option, a
model rewrite, a fallback's model), never a 500; a body it passes through untouched still goes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from gateway.accounting import local_periods
from gateway.mock import MockState
from gateway.stages.body import MAX_NESTING
from gateway.store.accounting import ACCOUNTING
from tests.conftest import KEY_A, sha

Client = TestClient[Any, Any]
OPENAI = {"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"}
ANTHROPIC = {"x-api-key": KEY_A, "Content-Type": "application/json"}
MESSAGE = b'"messages":[{"role":"user","content":"hi"}]'
TOO_DEEP = (
    "The request body is nested too deeply: the gateway rewrites JSON nested at most "
    f"{MAX_NESTING} levels deep."
)


def body(model: str, levels: int, extra: bytes = b"") -> bytes:
    """A request whose field `x` makes the body `levels` deep (the body's object is one)."""
    nested = b"[" * (levels - 1) + b"]" * (levels - 1)
    return b'{"model":"%s",%s,"max_tokens":20%s,"x":%s}' % (model.encode(), MESSAGE, extra, nested)


DETERMINISTIC = b',"temperature":0'
STREAM = b',"stream":true'
SITES = {
    # name: (path, model, extra fields, headers)
    "openai-cache-key": ("/v1/chat/completions", "gpt-4o-mini", DETERMINISTIC, OPENAI),
    "anthropic-cache-key": ("/v1/messages", "claude-haiku-4-5", DETERMINISTIC, ANTHROPIC),
    "openai-stream-usage": ("/v1/chat/completions", "plain-model", STREAM, OPENAI),
    "openai-model-rewrite": ("/v1/chat/completions", "cheap-model", b"", OPENAI),
    "anthropic-model-rewrite": ("/v1/messages", "claude-cheap", b"", ANTHROPIC),
    "openai-fallback-model": ("/v1/chat/completions", "spare-model", b"", OPENAI),
}


@pytest.fixture
async def gateway(
    make_gateway: Callable[..., Awaitable[Client]], store_url: str, mock: MockState
) -> Client:
    cached = {"cache": {"ttl_s": 60}}
    return await make_gateway(
        storage={"url": store_url},
        routes=[
            {"name": "plain", "match": {"model": "plain-*"}, "provider": "openai"},
            {
                "name": "cheap",
                "match": {"model": "cheap-*"},
                "provider": "openai",
                "model": "gpt-4o-mini",
            },
            {
                "name": "spare",
                "match": {"model": "spare-*"},
                "provider": "openai",
                "fallbacks": [{"provider": "openai", "model": "gpt-4o-mini"}],
            },
            {"name": "chat", "match": {"model": "gpt-4o*"}, "provider": "openai"} | cached,
            {
                "name": "claude-cheap",
                "match": {"model": "claude-cheap"},
                "provider": "anthropic",
                "model": "claude-haiku-4-5",
            },
            {"name": "claude", "match": {"model": "claude-*"}, "provider": "anthropic"} | cached,
        ],
        keys=[
            {
                "name": "team-a",
                "key_sha256": sha(KEY_A),
                "routes": ["*"],
                "budget": {"usd_per_month": 100},
            }
        ],
    )


async def _spent_and_held(gateway: Client) -> list[int]:
    month = local_periods()[1]
    keys = [f"spent:k:team-a:m{month}", f"held:k:team-a:m{month}"]
    return await gateway.server.app[ACCOUNTING].read(keys)


def _error(site: str, answer: Any) -> dict[str, Any]:
    """The error object, checked to be in the dialect of the site's path."""
    if SITES[site][3] is ANTHROPIC:
        assert set(answer) == {"type", "error"}
        assert answer["type"] == "error"
        assert set(answer["error"]) == {"type", "message"}
    else:
        assert set(answer) == {"error"}
        assert set(answer["error"]) == {"message", "type", "param", "code"}
        assert answer["error"]["code"] == "invalid_request"
    error: dict[str, Any] = answer["error"]
    return error


@pytest.mark.parametrize("site", list(SITES))
async def test_a_body_too_deep_to_write_again_is_a_400_in_the_dialect_and_one_log_line(
    site: str, gateway: Client, mock: MockState
) -> None:
    path, model, extra, headers = SITES[site]
    with structlog.testing.capture_logs() as logs:
        resp = await gateway.post(path, data=body(model, 300, extra), headers=headers)
        answer = await resp.json()
    assert resp.status == 400
    assert resp.headers["x-should-retry"] == "false"
    error = _error(site, answer)
    assert (error["type"], error["message"]) == ("invalid_request_error", TOO_DEEP)
    lines = [line for line in logs if line["event"] == "request"]
    assert [(line["status"], line["outcome"]) for line in lines] == [(400, "rejected")]
    assert not [line for line in logs if line["log_level"] in ("error", "critical")]
    assert mock.requests == []
    assert await _spent_and_held(gateway) == [0, 0]


@pytest.mark.parametrize("site", list(SITES))
async def test_a_body_as_deep_as_the_message_says_is_served_at_every_site(
    site: str, gateway: Client
) -> None:
    path, model, extra, headers = SITES[site]
    resp = await gateway.post(path, data=body(model, MAX_NESTING, extra), headers=headers)
    assert resp.status == 200
    await resp.read()


async def test_a_deep_body_passed_through_untouched_is_not_refused(
    gateway: Client, mock: MockState
) -> None:
    """The gateway writes nothing of it: it reaches the provider byte for byte."""
    sent = body("plain-model", 300)
    resp = await gateway.post("/v1/chat/completions", data=sent, headers=OPENAI)
    assert resp.status == 200
    assert mock.requests[0].body == sent

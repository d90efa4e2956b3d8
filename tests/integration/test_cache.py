"""The response cache seen from a client: hits, misses, bypasses, keys, TTLs and replay forms.

Every test runs on the embedded store and on the real Redis (`store_url`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.cache.state import cache_entry_count, cache_stats
from gateway.drain import DRAIN
from gateway.mock import MockState
from gateway.routes import STORE
from gateway.sse import SSEParser
from tests.conftest import KEY_A, KEY_B

Client = TestClient[Any, Any]
MakeGateway = Callable[..., Awaitable[Client]]
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
ANTHROPIC_A = {"x-api-key": KEY_A}


def cache_config(store_url: str, **cache: Any) -> dict[str, Any]:
    """Config sections: routes that cache with `cache` options, one that does not."""
    section = {"ttl_s": 60, **cache}
    return {
        "storage": {"url": store_url},
        "routes": [
            {
                "name": "chat",
                "match": {"path": "/v1/chat/completions", "model": "gpt-4o*"},
                "provider": "openai",
                "cache": section,
                "retry": {"attempts": 1},  # failures are quick, and counted once
            },
            {
                "name": "plain",
                "match": {"path": "/v1/chat/completions", "model": "plain-*"},
                "provider": "openai",
            },
            {
                "name": "openai",
                "match": {"path": "/v1/*"},
                "provider": "openai",
                "cache": section,
                "retry": {"attempts": 1},
            },
            {
                "name": "claude",
                "match": {"path": "/v1/messages*", "model": "claude-*"},
                "provider": "anthropic",
                "cache": section,
                "retry": {"attempts": 1},
            },
        ],
    }


def chat(content: str = "Hello", **fields: Any) -> dict[str, Any]:
    body = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [{"role": "user", "content": content}],
    }
    return {**body, **fields}


def message(content: str = "Hello", **fields: Any) -> dict[str, Any]:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "temperature": 0,
        "messages": [{"role": "user", "content": content}],
    }
    return {**body, **fields}


async def post(
    gateway: Client,
    body: dict[str, Any] | bytes,
    headers: dict[str, str] | None = None,
    path: str = "/v1/chat/completions",
) -> tuple[Any, bytes]:
    """POST and read the whole answer, then wait for the request to end (its answer is
    written to the store once sent); returns (response, body)."""
    if isinstance(body, bytes):
        hdrs = {**(headers or A), "Content-Type": "application/json"}
        resp = await gateway.post(path, data=body, headers=hdrs)
    else:
        resp = await gateway.post(path, json=body, headers=headers or A)
    answer = await resp.read()
    assert await gateway.server.app[DRAIN].wait_idle(5)
    return resp, answer


def sse_json(raw: bytes) -> list[Any]:
    return [data if data == b"[DONE]" else orjson.loads(data) for _, data in SSEParser().feed(raw)]


def streamed_text(raw: bytes) -> str:
    """The answer text of an OpenAI chat stream or an Anthropic messages stream."""
    out = []
    for event in sse_json(raw):
        if event == b"[DONE]":
            continue
        for choice in event.get("choices") or ():
            out.append(choice["delta"].get("content") or "")
        if event.get("type") == "content_block_delta":
            out.append(event["delta"].get("text", ""))
    return "".join(out)


@pytest.fixture
async def gateway(make_gateway: MakeGateway, store_url: str) -> Client:
    return await make_gateway(**cache_config(store_url))


async def test_repeated_request_is_a_hit_with_one_upstream_call_and_the_same_body(
    gateway: Client, mock: MockState
) -> None:
    first, first_body = await post(gateway, chat())
    second, second_body = await post(gateway, chat())
    assert (first.status, second.status) == (200, 200)
    assert first.headers["x-gateway-cache"] == "MISS"
    assert second.headers["x-gateway-cache"] == "HIT"
    assert second.headers["x-gateway-attempts"] == "0"
    assert second_body == first_body
    assert orjson.loads(second_body)["usage"]["completion_tokens"] > 0  # what it would have seen
    assert len(mock.requests) == 1


async def test_key_order_and_whitespace_in_the_raw_body_still_hit(
    gateway: Client, mock: MockState
) -> None:
    await post(
        gateway,
        b'{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Hi"}]}',
    )
    resp, _ = await post(
        gateway,
        b'{ "messages" : [ { "content" : "Hi",\n "role" : "user" } ],\n\t"temperature": 0.0,'
        b' "model": "gpt-4o-mini" }',
    )
    assert resp.headers["x-gateway-cache"] == "HIT"
    assert len(mock.requests) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": "Hello!"}]},
        {"max_tokens": 3},
        {"seed": 1},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"some_future_field": True},
    ],
)
async def test_request_differing_in_any_field_is_a_miss(
    gateway: Client, mock: MockState, change: dict[str, Any]
) -> None:
    await post(gateway, chat())
    resp, _ = await post(gateway, {**chat(), **change})
    assert resp.headers["x-gateway-cache"] == "MISS"
    assert len(mock.requests) == 2


async def test_integers_past_64_bits_that_differ_only_past_a_floats_precision_are_a_miss(
    gateway: Client, mock: MockState
) -> None:
    """Parsed, both are the float 1.8446744073709552e19; the provider reads them exactly."""
    base = b'{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Hi"}],'
    await post(gateway, base + b'"logit_bias":{"1":18446744073709551616}}')
    resp, _ = await post(gateway, base + b'"logit_bias":{"1":18446744073709551617}}')
    assert resp.headers["x-gateway-cache"] == "MISS"
    again, _ = await post(gateway, base + b' "logit_bias": {"1": 18446744073709551617} }')
    assert again.headers["x-gateway-cache"] == "HIT"  # written alike: one entry
    assert len(mock.requests) == 2


async def test_stream_flag_and_user_field_do_not_split_the_key(
    gateway: Client, mock: MockState
) -> None:
    await post(gateway, chat(user="u1"))
    resp, _ = await post(gateway, chat(user="u2", stream=True))
    assert resp.headers["x-gateway-cache"] == "HIT"
    assert len(mock.requests) == 1


async def test_two_keys_sending_the_same_request_make_two_upstream_calls(
    gateway: Client, mock: MockState
) -> None:
    await post(gateway, chat(), A)
    resp, _ = await post(gateway, chat(), B)
    again, _ = await post(gateway, chat(), B)
    assert resp.headers["x-gateway-cache"] == "MISS"  # says nothing about team-a's entry
    assert again.headers["x-gateway-cache"] == "HIT"
    assert len(mock.requests) == 2


async def test_route_shared_across_keys_answers_both_keys_from_one_call(
    make_gateway: MakeGateway, store_url: str, mock: MockState
) -> None:
    gateway = await make_gateway(**cache_config(store_url, shared_across_keys=True))
    await post(gateway, chat(), A)
    resp, _ = await post(gateway, chat(), B)
    assert resp.headers["x-gateway-cache"] == "HIT"
    assert len(mock.requests) == 1


@pytest.mark.parametrize("temperature", [0.7, None])
async def test_sampled_request_bypasses_and_always_reaches_the_provider(
    gateway: Client, mock: MockState, temperature: float | None
) -> None:
    body = chat(temperature=temperature)
    if temperature is None:
        del body["temperature"]  # the provider's default, 1
    for _ in range(2):
        resp, _ = await post(gateway, body)
        assert resp.headers["x-gateway-cache"] == "BYPASS"
    assert len(mock.requests) == 2


async def test_route_opting_in_caches_sampled_requests(
    make_gateway: MakeGateway, store_url: str, mock: MockState
) -> None:
    gateway = await make_gateway(**cache_config(store_url, cache_nondeterministic=True))
    await post(gateway, chat(temperature=1.0))
    resp, _ = await post(gateway, chat(temperature=1.0))
    assert resp.headers["x-gateway-cache"] == "HIT"
    assert len(mock.requests) == 1


async def test_no_cache_goes_upstream_and_refreshes_the_entry(
    gateway: Client, mock: MockState
) -> None:
    await post(gateway, chat())
    fresh, fresh_body = await post(
        gateway, chat(), {**A, "Cache-Control": "no-cache", "x-mock-reply": "Newer answer"}
    )
    later, later_body = await post(gateway, chat())
    assert fresh.headers["x-gateway-cache"] == "BYPASS"
    assert later.headers["x-gateway-cache"] == "HIT"
    assert later_body == fresh_body
    assert b"Newer answer" in later_body
    assert len(mock.requests) == 2


async def test_no_store_neither_reads_nor_writes(gateway: Client, mock: MockState) -> None:
    await post(gateway, chat())
    skipped, _ = await post(gateway, chat("Other"), {**A, "Cache-Control": "no-store"})
    bypass_read, _ = await post(gateway, chat(), {**A, "Cache-Control": "no-store"})
    after, _ = await post(gateway, chat("Other"))
    assert skipped.headers["x-gateway-cache"] == "BYPASS"
    assert bypass_read.headers["x-gateway-cache"] == "BYPASS"
    assert after.headers["x-gateway-cache"] == "MISS"  # the no-store answer was not kept
    assert len(mock.requests) == 4


async def test_ttl_header_shortens_the_entry_life(gateway: Client, mock: MockState) -> None:
    await post(gateway, chat(), {**A, "x-gateway-cache-ttl": "1"})
    hit, _ = await post(gateway, chat())
    await asyncio.sleep(1.1)
    expired, _ = await post(gateway, chat())
    assert hit.headers["x-gateway-cache"] == "HIT"
    assert expired.headers["x-gateway-cache"] == "MISS"
    assert len(mock.requests) == 2


async def test_ttl_header_cannot_lengthen_the_route_ttl(gateway: Client) -> None:
    await post(gateway, chat(), {**A, "x-gateway-cache-ttl": "999999"})
    store = gateway.server.app[STORE]
    keys = [k async for k in store.scan_iter(match="gw:cache:*")]
    assert len(keys) == 1
    assert 0 < await store.pttl(keys[0]) <= 60_000


async def test_invalid_ttl_header_is_400_in_the_client_dialect(
    gateway: Client, mock: MockState
) -> None:
    resp, body = await post(gateway, chat(), {**A, "x-gateway-cache-ttl": "forever"})
    assert resp.status == 400
    assert orjson.loads(body)["error"]["code"] == "invalid_cache_ttl"
    assert mock.requests == []


async def test_route_without_cache_section_sends_no_cache_header(
    gateway: Client, mock: MockState
) -> None:
    for _ in range(2):
        resp, _ = await post(gateway, chat(model="plain-model"))
        assert "x-gateway-cache" not in resp.headers
    assert len(mock.requests) == 2


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "Hi", "temperature": 0}, A),
        ("/v1/messages/count_tokens", message(), ANTHROPIC_A),
    ],
)
async def test_endpoint_the_cache_does_not_handle_bypasses(
    gateway: Client, mock: MockState, path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    for _ in range(2):
        resp, _ = await post(gateway, body, headers, path)
        assert resp.status == 200
        assert resp.headers["x-gateway-cache"] == "BYPASS"
    assert len(mock.requests) == 2


async def test_embeddings_are_cached(gateway: Client, mock: MockState) -> None:
    body = {"model": "text-embedding-3-small", "input": ["a", "b"]}
    _, first = await post(gateway, body, path="/v1/embeddings")
    resp, second = await post(gateway, body, path="/v1/embeddings")
    assert resp.headers["x-gateway-cache"] == "HIT"
    assert second == first
    assert len(mock.requests) == 1


async def test_stream_miss_then_json_hit_gives_the_same_answer(
    gateway: Client, mock: MockState
) -> None:
    miss, stream = await post(gateway, chat(stream=True))
    hit, body = await post(gateway, chat())
    assert miss.headers["x-gateway-cache"] == "MISS"
    assert hit.headers["x-gateway-cache"] == "HIT"
    answer = orjson.loads(body)
    assert answer["object"] == "chat.completion"
    assert (
        answer["choices"][0]["message"]["content"] == streamed_text(stream) == "Mock answer: Hello"
    )
    assert answer["usage"]["prompt_tokens"] > 0  # stored with its usage
    assert hit.headers["Content-Length"] == str(len(body))
    assert len(mock.requests) == 1


async def test_json_miss_then_stream_hit_gives_the_same_answer_as_sse(
    gateway: Client, mock: MockState
) -> None:
    _, body = await post(gateway, chat())
    hit, stream = await post(gateway, chat(stream=True))
    assert hit.headers["x-gateway-cache"] == "HIT"
    assert hit.content_type == "text/event-stream"
    assert "Transfer-Encoding" not in hit.headers or "Content-Length" not in hit.headers
    assert streamed_text(stream) == orjson.loads(body)["choices"][0]["message"]["content"]
    assert stream.endswith(b"data: [DONE]\n\n")
    assert len(mock.requests) == 1


@pytest.mark.parametrize("include_usage", [True, False])
async def test_stream_hit_has_a_usage_chunk_only_when_the_client_asked(
    gateway: Client, mock: MockState, include_usage: bool
) -> None:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    _, missed = await post(gateway, chat(stream=True, **options))
    _, hit = await post(gateway, chat(stream=True, **options))
    for raw in (missed, hit):
        usage_chunks = [e for e in sse_json(raw) if isinstance(e, dict) and e.get("usage")]
        assert len(usage_chunks) == (1 if include_usage else 0)
    assert len(mock.requests) == 1


@pytest.mark.parametrize("first_stream", [True, False])
async def test_anthropic_answer_replays_in_the_other_form(
    gateway: Client, mock: MockState, first_stream: bool
) -> None:
    _, first = await post(gateway, message(stream=first_stream), ANTHROPIC_A, "/v1/messages")
    hit, second = await post(gateway, message(stream=not first_stream), ANTHROPIC_A, "/v1/messages")
    assert hit.headers["x-gateway-cache"] == "HIT"
    streamed, whole = (first, second) if first_stream else (second, first)
    answer = orjson.loads(whole)
    assert answer["content"][0]["text"] == streamed_text(streamed) == "Mock answer: Hello"
    assert answer["usage"]["output_tokens"] > 0
    assert len(mock.requests) == 1


async def test_completion_stream_miss_serves_a_json_hit(gateway: Client, mock: MockState) -> None:
    body = {"model": "gpt-4o-mini", "prompt": "Say hi", "temperature": 0}
    await post(gateway, {**body, "stream": True}, path="/v1/completions")
    hit, whole = await post(gateway, body, path="/v1/completions")
    assert hit.headers["x-gateway-cache"] == "HIT"
    assert orjson.loads(whole)["choices"][0]["text"] == "Mock answer: Say hi"
    assert len(mock.requests) == 1


async def test_expired_entry_is_a_miss_even_within_the_stale_window(
    make_gateway: MakeGateway, store_url: str, mock: MockState
) -> None:
    gateway = await make_gateway(**cache_config(store_url, ttl_s=1, stale_s=60))
    await post(gateway, chat())
    await asyncio.sleep(1.1)
    resp, _ = await post(gateway, chat())
    assert resp.headers["x-gateway-cache"] == "MISS"
    assert len(mock.requests) == 2


async def test_stats_count_hits_misses_bypasses_stores_and_saved_tokens(gateway: Client) -> None:
    _, body = await post(gateway, chat())
    await post(gateway, chat())
    await post(gateway, chat())
    await post(gateway, chat(temperature=0.5))
    stats = cache_stats(gateway.server.app)
    usage = orjson.loads(body)["usage"]
    assert (stats.hits, stats.misses, stats.bypasses, stats.stores) == (2, 1, 1, 1)
    assert stats.saved_input_tokens == 2 * usage["prompt_tokens"]
    assert stats.saved_output_tokens == 2 * usage["completion_tokens"]
    assert stats.hit_rate == pytest.approx(2 / 3)


async def test_entry_count_is_per_partition_and_leaves_out_locks(gateway: Client) -> None:
    await post(gateway, chat("one"), A)
    await post(gateway, chat("two"), A)
    await post(gateway, chat("one"), B)
    await post(gateway, chat("one"), A)  # a hit: no new entry
    app = gateway.server.app
    await app[STORE].set("gw:cache:key.team-a:{abc}:lock", "t")  # a leader's lock
    assert await cache_entry_count(app) == 3
    assert await cache_entry_count(app, "key.team-a") == 2
    assert await cache_entry_count(app, "key.team-b") == 1


async def test_hit_costs_one_redis_round_trip_and_miss_two(
    gateway: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted at the client: every command that touches a cache key is one round trip
    (other stages' own commands, such as the request log, are not the cache's)."""
    store = gateway.server.app[STORE]
    await post(gateway, chat("warm up"))  # first use loads the scripts
    assert await gateway.server.app[DRAIN].wait_idle(5)
    commands: list[str] = []
    original = store.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        if any(isinstance(a, str) and a.startswith("gw:cache:") for a in args):
            commands.append(str(args[0]))
        return await original(*args, **options)

    monkeypatch.setattr(store, "execute_command", counting)
    miss, _ = await post(gateway, chat())
    # The answer is stored once it is sent: wait for the request to end.
    assert await gateway.server.app[DRAIN].wait_idle(5)
    miss_commands, commands[:] = list(commands), []
    hit, _ = await post(gateway, chat())
    assert await gateway.server.app[DRAIN].wait_idle(5)
    assert (miss.headers["x-gateway-cache"], hit.headers["x-gateway-cache"]) == ("MISS", "HIT")
    assert commands == ["EVALSHA"]
    assert miss_commands == ["EVALSHA", "EVALSHA"]  # lookup (+ lock), store (+ unlock)

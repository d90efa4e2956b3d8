"""Streams (retried only before the first byte), hedged attempts, and JSON-mode anomalies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import DEFAULT_STAGES, create_app
from gateway.config import GatewayConfig
from gateway.context import RequestContext
from gateway.mock import MockState, ScriptStep
from gateway.pipeline import Next, Stage
from gateway.pricing import usd
from gateway.resilience import RESILIENCE
from tests.conftest import KEY_A, sha

Client = TestClient[Any, Any]
Build = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {KEY_A}"}
PRIMARY, SPARE = "gpt-4o", "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = {"model": PRIMARY, "messages": MESSAGES}
STREAM = {**CHAT, "stream": True}
JSON_CHAT = {**CHAT, "response_format": {"type": "json_object"}}
FAST_RETRY = {"attempts": 3, "base_s": 0.01, "max_s": 0.02}
KEYS = [{"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"]}]


@pytest.fixture
def build(
    aiohttp_client: Callable[..., Awaitable[Client]],
    make_config: Callable[..., GatewayConfig],
) -> Build:
    """A gateway with chat and messages routes (options as keywords); it records each
    request's context in `seen`."""

    async def make(seen: list[RequestContext] | None = None, **options: Any) -> Client:
        routes = [
            {"name": name, "match": {"path": path}, "provider": provider, **options}
            for name, path, provider in [
                ("chat", "/v1/chat/completions", "openai"),
                ("claude", "/v1/messages", "anthropic"),
            ]
        ]
        for route in routes:
            route.setdefault("retry", FAST_RETRY)
        stages: list[Stage] = list(DEFAULT_STAGES)
        stages.insert(len(stages) - 1, _capture([] if seen is None else seen))
        return await aiohttp_client(create_app(make_config(routes=routes, keys=KEYS), stages))

    return make


def _capture(seen: list[RequestContext]) -> Stage:
    async def capture(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
        seen.append(ctx)
        return await call_next(ctx)

    return capture


def _events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e.strip()]


async def test_stream_cut_after_k_chunks_ends_with_error_event_after_one_attempt(
    build: Build, mock: MockState
) -> None:
    gateway = await build()
    mock.push([ScriptStep(reply="a b c d e f", cut_after=3)])
    resp = await gateway.post("/v1/chat/completions", json=STREAM, headers=AUTH)
    events = _events(await resp.text())
    assert resp.status == 200
    assert len(events) == 4
    assert all(e.startswith('data: {"id"') for e in events[:3])
    error = orjson.loads(events[3].removeprefix("data: "))["error"]
    assert error["code"] == "upstream_failed"
    assert resp.headers["x-gateway-attempts"] == "1"
    assert len(mock.requests) == 1
    assert gateway.app[RESILIENCE].snapshot().stream_interruptions == {"openai": 1}


async def test_anthropic_stream_cut_ends_with_an_error_event(build: Build, mock: MockState) -> None:
    gateway = await build()
    mock.push([ScriptStep(reply="a b c d e f", cut_after=2)])
    payload = {"model": "claude-haiku-4-5", "max_tokens": 50, "stream": True, "messages": MESSAGES}
    resp = await gateway.post("/v1/messages", json=payload, headers={"x-api-key": KEY_A})
    events = _events(await resp.text())
    assert len(events) == 3
    assert events[-1].startswith("event: error\ndata: ")
    assert len(mock.requests) == 1


async def test_stream_failing_before_its_first_byte_is_retried(
    build: Build, mock: MockState
) -> None:
    gateway = await build()
    mock.push([ScriptStep(status=503), ScriptStep(reply="ok then")])
    resp = await gateway.post("/v1/chat/completions", json=STREAM, headers=AUTH)
    text = await resp.text()
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert text.rstrip().endswith("data: [DONE]")
    assert resp.headers["x-gateway-attempts"] == "2"


async def test_stream_silent_past_ttfb_timeout_is_retried(build: Build, mock: MockState) -> None:
    gateway = await build(retry={**FAST_RETRY, "ttfb_timeout_s": 0.2})
    mock.push([ScriptStep(ttfb_s=3.0), ScriptStep()])
    started = time.monotonic()
    resp = await gateway.post("/v1/chat/completions", json=STREAM, headers=AUTH)
    text = await resp.text()
    assert time.monotonic() - started < 1.5
    assert text.rstrip().endswith("data: [DONE]")
    assert resp.headers["x-gateway-attempts"] == "2"


async def test_hedge_answers_when_the_primary_is_slow_and_the_loser_is_cancelled(
    build: Build, mock: MockState
) -> None:
    gateway = await build(hedge_after_s=0.1)
    mock.push([ScriptStep(latency_s=2.0, reply="slow"), ScriptStep(reply="hedged")])
    started = time.monotonic()
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    body = await resp.json()
    assert time.monotonic() - started < 1.0
    assert body["choices"][0]["message"]["content"] == "hedged"
    assert resp.headers["x-gateway-attempts"] == "2"
    assert len(mock.requests) == 2
    snapshot = gateway.app[RESILIENCE].snapshot()
    assert snapshot.hedges == {("chat", "started"): 1, ("chat", "won"): 1}
    assert snapshot.attempts == {("openai", "ok"): 1, ("openai", "cancelled"): 1}


@pytest.mark.parametrize(
    ("options", "steps"),
    [
        ({"hedge_after_s": 0.1}, [ScriptStep(latency_s=2.0), ScriptStep()]),  # a hedge lost
        (  # a try cut by its per-try timeout, then retried
            {"retry": {**FAST_RETRY, "per_try_timeout_s": 0.2}},
            [ScriptStep(latency_s=2.0), ScriptStep()],
        ),
        # an answer made whole (and billed) but broken off on its way, then retried
        ({}, [ScriptStep(cut_after=10), ScriptStep()]),
    ],
)
async def test_a_try_cut_while_the_provider_worked_is_billed_at_its_reservation(
    build: Build, mock: MockState, options: dict[str, Any], steps: list[ScriptStep]
) -> None:
    """The provider may bill a try the gateway gave up on, and its usage is never seen: it
    costs its reservation, beside the answer's usage."""
    seen: list[RequestContext] = []
    gateway = await build(seen, **options)
    mock.push(steps)
    resp = await gateway.post("/v1/chat/completions", json={**CHAT, "max_tokens": 50}, headers=AUTH)
    assert (resp.status, resp.headers["x-gateway-attempts"]) == (200, "2")
    ctx = seen[0]
    price = ctx.runtime.prices.get(PRIMARY)
    assert price is not None
    assert ctx.usage is not None
    answer = price.cost_micro(ctx.usage)
    held = price.worst_case_micro(len(ctx.upstream_body) // 4 + 1, 50)
    assert resp.headers["x-gateway-cost-usd"] == usd(answer + held)
    assert (ctx.cost_micro, ctx.cost_source) == (answer + held, "usage")


async def test_fast_primary_starts_no_hedge(build: Build, mock: MockState) -> None:
    gateway = await build(hedge_after_s=0.5)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    assert resp.headers["x-gateway-attempts"] == "1"
    assert gateway.app[RESILIENCE].snapshot().hedges == {}


async def test_hedge_goes_to_the_fallback_target_when_the_route_has_one(
    build: Build, mock: MockState
) -> None:
    seen: list[RequestContext] = []
    gateway = await build(
        seen, hedge_after_s=0.1, fallbacks=[{"provider": "openai", "model": SPARE}]
    )
    mock.push([ScriptStep(latency_s=2.0)], model=PRIMARY)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert (await resp.json())["model"] == SPARE
    assert [r.json()["model"] for r in mock.requests] == [PRIMARY, SPARE]
    assert seen[0].upstream_model == SPARE


async def test_hedged_stream_whose_first_chunk_is_late_loses_to_the_hedge(
    build: Build, mock: MockState
) -> None:
    gateway = await build(hedge_after_s=0.1)
    mock.push([ScriptStep(ttfb_s=2.0, reply="slow"), ScriptStep(reply="quick")])
    started = time.monotonic()
    resp = await gateway.post("/v1/chat/completions", json=STREAM, headers=AUTH)
    text = await resp.text()
    assert time.monotonic() - started < 1.0
    assert "quick" in text
    assert "slow" not in text


async def test_hedge_loser_connection_to_the_provider_is_closed(
    aiohttp_server: Callable[..., Awaitable[TestServer]], make_gateway: Build
) -> None:
    loser_gone = asyncio.Event()
    calls = 0

    async def chat(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                loser_gone.set()
                raise
        message = {"role": "assistant", "content": f"answer {calls}"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return web.json_response({"object": "chat.completion", "choices": [choice]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    upstream = await aiohttp_server(app)
    url = str(upstream.make_url("/v1")).rstrip("/")
    gateway = await make_gateway(
        providers={"openai": {"kind": "openai", "base_url": url}},
        routes=[{"name": "chat", "provider": "openai", "hedge_after_s": 0.1}],
        keys=KEYS,
    )
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert (await resp.json())["choices"][0]["message"]["content"] == "answer 2"
    await asyncio.wait_for(loser_gone.wait(), timeout=2)


async def test_invalid_json_in_json_mode_is_recorded_as_an_anomaly(
    build: Build, mock: MockState
) -> None:
    seen: list[RequestContext] = []
    gateway = await build(seen)
    mock.push([ScriptStep(reply="Sure! Here it is: {a: 1}")])
    resp = await gateway.post("/v1/chat/completions", json=JSON_CHAT, headers=AUTH)
    assert resp.status == 200
    assert seen[0].anomalies == ["invalid_json"]
    assert len(mock.requests) == 1


async def test_json_repair_retries_once_and_returns_the_valid_answer(
    build: Build, mock: MockState
) -> None:
    seen: list[RequestContext] = []
    gateway = await build(seen, json_repair="retry")
    mock.push([ScriptStep(reply="not json"), ScriptStep(reply='{"ok": true}')])
    resp = await gateway.post("/v1/chat/completions", json=JSON_CHAT, headers=AUTH)
    body = await resp.json()
    assert body["choices"][0]["message"]["content"] == '{"ok": true}'
    assert resp.headers["x-gateway-attempts"] == "2"
    (ctx,) = seen
    assert ctx.anomalies == ["invalid_json"]  # it happened, and was paid for
    assert ctx.usage is not None
    assert ctx.usage.input_tokens == 2 * body["usage"]["prompt_tokens"]
    assert ctx.response_body == await resp.read()


async def test_json_repair_gives_up_after_one_more_try(build: Build, mock: MockState) -> None:
    gateway = await build(json_repair="retry")
    mock.push([ScriptStep(reply="no"), ScriptStep(reply="still no"), ScriptStep()])
    resp = await gateway.post("/v1/chat/completions", json=JSON_CHAT, headers=AUTH)
    assert (await resp.json())["choices"][0]["message"]["content"] == "still no"
    assert len(mock.requests) == 2


async def test_truncated_answer_is_recorded(build: Build, mock: MockState) -> None:
    seen: list[RequestContext] = []
    gateway = await build(seen)
    mock.push([ScriptStep(reply="one two three four")])
    payload = {**CHAT, "max_tokens": 2}
    resp = await gateway.post("/v1/chat/completions", json=payload, headers=AUTH)
    assert (await resp.json())["choices"][0]["finish_reason"] == "length"
    assert seen[0].anomalies == ["truncated"]


async def test_a_json_repair_cut_by_the_deadline_leaves_the_first_answer(
    build: Build, mock: MockState
) -> None:
    """The first answer arrived in time; the second try is still running when the
    request's deadline passes. The client gets the first, billed from its usage."""
    seen: list[RequestContext] = []
    gateway = await build(seen, json_repair="retry", timeout_s=0.5)
    mock.push([ScriptStep(reply="not json"), ScriptStep(reply='{"ok": 1}', latency_s=3)])
    resp = await gateway.post("/v1/chat/completions", json=JSON_CHAT, headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["choices"][0]["message"]["content"] == "not json"
    assert resp.headers["x-gateway-attempts"] == "2"
    (ctx,) = seen
    assert ctx.cost_source == "usage"
    assert ctx.usage is not None
    assert ctx.usage.input_tokens == body["usage"]["prompt_tokens"]

"""Fallbacks, circuit breakers and serving stale answers when every target failed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import DEFAULT_STAGES, create_app
from gateway.config import GatewayConfig
from gateway.context import RequestContext
from gateway.mock import MockState, ScriptStep
from gateway.pipeline import Next, Stage
from gateway.resilience import RESILIENCE
from tests.conftest import KEY_A, PROVIDER_KEY, sha

Client = TestClient[Any, Any]
AUTH = {"Authorization": f"Bearer {KEY_A}"}
PRIMARY, SPARE = "gpt-4o", "gpt-4o-mini"
CHAT = {"model": PRIMARY, "messages": [{"role": "user", "content": "hi"}]}
FAST_RETRY = {"attempts": 2, "base_s": 0.01, "max_s": 0.02}
KEYS = [{"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"]}]


@pytest.fixture
def providers(mock_url: str) -> dict[str, Any]:
    """The mock under three names: two OpenAI accounts and an Anthropic one."""
    return {
        "openai": {"kind": "openai", "base_url": f"{mock_url}/v1", "api_key": PROVIDER_KEY},
        "backup": {"kind": "openai", "base_url": f"{mock_url}/v1", "api_key": PROVIDER_KEY},
        "anthropic": {"kind": "anthropic", "base_url": mock_url, "api_key": PROVIDER_KEY},
    }


@pytest.fixture
def build(
    aiohttp_client: Callable[..., Awaitable[Client]],
    make_config: Callable[..., GatewayConfig],
    providers: dict[str, Any],
) -> Callable[..., Awaitable[Client]]:
    """A gateway with one chat route (options as keywords); `extra` runs before upstream."""

    async def make(extra: Stage | None = None, **route: Any) -> Client:
        config = {
            "name": "chat",
            "match": {"path": "/v1/chat/completions"},
            "provider": "openai",
            "retry": FAST_RETRY,
            **route,
        }
        stages = list(DEFAULT_STAGES)
        if extra is not None:
            stages.insert(len(stages) - 1, extra)
        app = create_app(make_config(providers=providers, routes=[config], keys=KEYS), stages)
        return await aiohttp_client(app)

    return make


def _models(mock: MockState) -> list[str]:
    return [r.json()["model"] for r in mock.requests]


def _capture(seen: list[RequestContext]) -> Stage:
    async def capture(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
        seen.append(ctx)
        return await call_next(ctx)

    return capture


async def test_primary_always_500_falls_back_and_the_fallback_answers(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    seen: list[RequestContext] = []
    gateway = await build(_capture(seen), fallbacks=[{"provider": "backup", "model": SPARE}])
    mock.push([ScriptStep(status=500)] * 5, model=PRIMARY)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["model"] == SPARE
    assert _models(mock) == [PRIMARY, PRIMARY, SPARE]
    assert resp.headers["x-gateway-attempts"] == "3"
    assert resp.headers["x-gateway-route"] == "chat"
    (ctx,) = seen
    assert ctx.provider is not None
    assert (ctx.provider.name, ctx.upstream_model) == ("backup", SPARE)
    assert gateway.app[RESILIENCE].snapshot().fallbacks == {("chat", "backup"): 1}
    # Billed at the price of the model that answered (gpt-4o-mini: $0.15 in, $0.60 out per
    # 1M tokens), not at gpt-4o's.
    usage = (await resp.json())["usage"]
    cost = -(-(usage["prompt_tokens"] * 150_000 + usage["completion_tokens"] * 600_000) // 10**6)
    assert resp.headers["x-gateway-cost-usd"] == f"0.{cost:06d}"


async def test_fallback_without_model_uses_the_primarys_model(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await build(retry={"attempts": 1}, fallbacks=[{"provider": "backup"}])
    mock.push([ScriptStep(status=503)], model=PRIMARY)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    assert _models(mock) == [PRIMARY, PRIMARY]
    assert mock.requests[0].body == mock.requests[1].body


async def test_request_error_does_not_fall_back(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await build(fallbacks=[{"provider": "backup", "model": SPARE}])
    mock.push([ScriptStep(status=400)], model=PRIMARY)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 400
    assert _models(mock) == [PRIMARY]


async def test_out_of_quota_primary_falls_back_without_retrying(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await build(fallbacks=[{"provider": "backup", "model": SPARE}])
    mock.push([ScriptStep(status=429, error_code="insufficient_quota")], model=PRIMARY)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    assert _models(mock) == [PRIMARY, SPARE]


async def test_long_retry_after_on_primary_falls_back_at_once(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await build(fallbacks=[{"provider": "backup", "model": SPARE}])
    mock.push([ScriptStep(status=429, headers={"Retry-After": "120"})], model=PRIMARY)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    assert _models(mock) == [PRIMARY, SPARE]


async def test_last_error_is_returned_when_every_target_failed(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await build(fallbacks=[{"provider": "backup", "model": SPARE}])
    mock.push([ScriptStep(status=500)] * 2, model=PRIMARY)
    mock.push([ScriptStep(status=503)] * 2, model=SPARE)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 503
    assert resp.headers["x-should-retry"] == "false"
    assert resp.headers["x-gateway-attempts"] == "4"


async def test_fallback_speaking_another_dialect_is_skipped_and_counted(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await build(fallbacks=[{"provider": "anthropic", "model": "claude-haiku-4-5"}])
    mock.push([ScriptStep(status=500)] * 2, model=PRIMARY)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 500
    assert [r.path for r in mock.requests] == ["/v1/chat/completions"] * 2
    skipped = gateway.app[RESILIENCE].snapshot().targets_skipped
    assert skipped == {("chat", "anthropic", "dialect"): 1}


async def test_circuit_opens_skips_the_primary_then_lets_one_probe_through(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await build(
        retry={"attempts": 1},
        circuit={"failures": 2, "cooldown_s": 0.3},
        fallbacks=[{"provider": "backup", "model": SPARE}],
    )
    mock.push([ScriptStep(status=500)] * 2, model=PRIMARY)
    for _ in range(2):  # two failures open the primary's circuit; the fallback answers
        resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        assert resp.status == 200
    assert _models(mock) == [PRIMARY, SPARE, PRIMARY, SPARE]

    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    assert resp.headers["x-gateway-attempts"] == "1"
    assert _models(mock)[4:] == [SPARE]  # no attempt on the primary

    await asyncio.sleep(0.35)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert (await resp.json())["model"] == PRIMARY  # the probe answered: closed again
    assert _models(mock)[5:] == [PRIMARY]


async def test_open_circuit_without_fallback_is_a_fast_503(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await build(retry={"attempts": 1}, circuit={"failures": 1, "cooldown_s": 60})
    mock.push([ScriptStep(status=502)], model=PRIMARY)
    assert (await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)).status == 502
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "circuit_open"
    assert resp.headers["x-should-retry"] == "false"
    assert resp.headers["x-gateway-attempts"] == "0"
    assert len(mock.requests) == 1


async def test_open_circuit_retry_after_is_the_rest_of_the_cooldown_rounded_up(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    """A client that waits as told must find the cooldown over, not arrive just before."""
    gateway = await build(retry={"attempts": 1}, circuit={"failures": 1, "cooldown_s": 59.5})
    mock.push([ScriptStep(status=502)], model=PRIMARY)
    await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "60"
    assert 59_000 < int(resp.headers["retry-after-ms"]) <= 59_500
    assert "tried again in 60s" in (await resp.json())["error"]["message"]


async def test_a_request_refused_while_the_probe_is_under_way_is_told_when_to_retry(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await build(retry={"attempts": 1}, circuit={"failures": 1, "cooldown_s": 0.1})
    mock.push([ScriptStep(status=502), ScriptStep(latency_s=1.0)], model=PRIMARY)
    await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    await asyncio.sleep(0.15)  # the cooldown is over: the next request is the probe
    probe = asyncio.ensure_future(gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH))
    while len(mock.requests) < 2:
        await asyncio.sleep(0.01)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 503
    assert (resp.headers["Retry-After"], resp.headers["retry-after-ms"]) == ("1", "1000")
    assert "one request is testing it now" in (await resp.json())["error"]["message"]
    assert (await probe).status == 200


async def test_readyz_shows_circuit_states(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await build(retry={"attempts": 1}, circuit={"failures": 1, "cooldown_s": 60})
    mock.push([ScriptStep(status=500)], model=PRIMARY)
    await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    body = await (await gateway.get("/readyz")).json()
    assert body["status"] == "ready"
    circuit = body["circuits"][f"openai/{PRIMARY}"]
    assert circuit["state"] == "open"
    assert circuit["consecutive_failures"] == 1
    assert 59 < circuit["retry_in_s"] <= 60


def _stale_stage(answer: web.StreamResponse | None, calls: list[str]) -> Stage:
    """What the cache stage does on a miss with an expired entry still in its stale window."""

    async def install(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
        async def stale_answer(ctx: RequestContext) -> web.StreamResponse | None:
            calls.append(ctx.error_code or "")
            return answer

        ctx.stale_answer = stale_answer
        return await call_next(ctx)

    return install


def _stale_response() -> web.Response:
    return web.json_response({"stale": True}, headers={"x-gateway-cache": "STALE"})


async def test_stale_answer_is_served_when_every_target_failed(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    calls: list[str] = []
    gateway = await build(_stale_stage(_stale_response(), calls))
    mock.push([ScriptStep(status=503)] * 2)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    assert resp.headers["x-gateway-cache"] == "STALE"
    assert await resp.json() == {"stale": True}
    assert calls == ["http_503"]
    assert len(mock.requests) == 2


async def test_stale_answer_is_served_when_the_deadline_passed(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    calls: list[str] = []
    gateway = await build(_stale_stage(_stale_response(), calls), timeout_s=0.2)
    mock.push([ScriptStep(latency_s=2.0)])
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.headers["x-gateway-cache"] == "STALE"
    assert calls == ["deadline_exceeded"]


async def test_stale_answer_does_not_hide_a_request_error(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    calls: list[str] = []
    gateway = await build(_stale_stage(_stale_response(), calls))
    mock.push([ScriptStep(status=400)])
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 400
    assert calls == []


async def test_no_stale_entry_leaves_the_error(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    calls: list[str] = []
    gateway = await build(_stale_stage(None, calls))
    mock.push([ScriptStep(status=503)] * 2)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 503
    assert resp.headers["x-should-retry"] == "false"
    assert calls == ["http_503"]


async def test_provider_hanging_until_the_deadline_counts_against_its_circuit(
    build: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await build(timeout_s=0.2, circuit={"failures": 1, "cooldown_s": 60})
    mock.push([ScriptStep(latency_s=2.0)], model=PRIMARY)
    assert (await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)).status == 504
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 503
    assert len(mock.requests) == 1


@pytest.mark.parametrize(
    "hurry",
    [{"x-gateway-timeout": "0.2"}, {"x-stainless-read-timeout": "0.4"}],
    ids=["gateway-header", "sdk-timeout"],
)
async def test_a_client_in_a_hurry_does_not_open_the_circuit_for_everyone(
    build: Callable[..., Awaitable[Client]], mock: MockState, hurry: dict[str, str]
) -> None:
    """A deadline the client shortened says nothing of the provider: the next, patient
    client is served by it, not refused with circuit_open."""
    gateway = await build(timeout_s=30, circuit={"failures": 1, "cooldown_s": 60})
    mock.push([ScriptStep(latency_s=1.0)] * 2, model=PRIMARY)
    for _ in range(2):
        resp = await gateway.post("/v1/chat/completions", json=CHAT, headers={**AUTH, **hurry})
        assert resp.status == 504
    patient = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert patient.status == 200
    assert len(mock.requests) == 3


@pytest.mark.parametrize("status", [500, 429])
async def test_a_circuit_opened_by_this_requests_own_failures_leaves_it_the_real_error(
    build: Callable[..., Awaitable[Client]], mock: MockState, status: int
) -> None:
    """The third try finds the circuit open after the first two: the client gets the
    provider's answer, not a 503 the provider never sent."""
    gateway = await build(
        retry={"attempts": 3, "base_s": 0.01, "max_s": 0.02},
        circuit={"failures": 2, "cooldown_s": 60},
    )
    mock.push([ScriptStep(status=status)] * 2, model=PRIMARY)
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == status
    assert resp.headers["x-gateway-attempts"] == "2"
    assert len(mock.requests) == 2
    later = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert later.status == 503  # a request that finds it open gets circuit_open, as before
    assert (await later.json())["error"]["code"] == "circuit_open"

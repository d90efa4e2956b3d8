"""Retries: what is retried, how long the gateway waits, deadlines, and the retry budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.mock import MockState, ScriptStep
from gateway.resilience import RESILIENCE
from tests.conftest import KEY_A, sha

Client = TestClient[Any, Any]
MakeGateway = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {KEY_A}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
FAST_RETRY = {"attempts": 3, "base_s": 0.01, "max_s": 0.02}
# A circuit that never opens, for tests about retries alone.
NO_CIRCUIT = {"failures": 100_000, "min_requests": 100_000}


async def _gateway(make_gateway: MakeGateway, **route: Any) -> Client:
    config = {
        "name": "chat",
        "match": {"path": "/v1/chat/completions"},
        "provider": "openai",
        "retry": FAST_RETRY,
        "circuit": NO_CIRCUIT,
        **route,
    }
    keys = [{"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"]}]
    return await make_gateway(routes=[config], keys=keys)


async def _post(gateway: Client, headers: dict[str, str] | None = None) -> tuple[Any, float]:
    started = time.monotonic()
    resp = await gateway.post(
        "/v1/chat/completions", json=CHAT, headers={**AUTH, **(headers or {})}
    )
    await resp.read()
    return resp, time.monotonic() - started


async def test_429_with_retry_after_waits_then_succeeds_with_identical_requests(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway)
    mock.push([ScriptStep(status=429, headers={"Retry-After": "1"}), ScriptStep()])
    resp, elapsed = await _post(gateway)
    assert resp.status == 200
    assert elapsed >= 1.0
    assert resp.headers["x-gateway-attempts"] == "2"
    first, second = mock.requests
    assert first.body == second.body
    assert first.headers == second.headers


async def test_retry_after_ms_is_preferred_over_retry_after(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway)
    headers = {"retry-after-ms": "150", "Retry-After": "5"}
    mock.push([ScriptStep(status=429, headers=headers), ScriptStep()])
    resp, elapsed = await _post(gateway)
    assert resp.status == 200
    assert 0.15 <= elapsed < 1.5


async def test_retry_after_past_the_cap_is_not_slept_and_429_is_returned_at_once(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway)
    mock.push([ScriptStep(status=429, headers={"Retry-After": "300"}), ScriptStep()])
    resp, elapsed = await _post(gateway)
    assert resp.status == 429
    assert elapsed < 1.0
    assert resp.headers["Retry-After"] == "300"
    assert resp.headers["x-should-retry"] == "false"
    assert resp.headers["x-gateway-attempts"] == "1"
    assert len(mock.requests) == 1


async def test_retry_after_past_the_deadline_is_not_slept(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway, timeout_s=2)
    mock.push([ScriptStep(status=503, headers={"Retry-After": "5"}), ScriptStep()])
    resp, elapsed = await _post(gateway)
    assert resp.status == 503
    assert elapsed < 1.0
    assert len(mock.requests) == 1


async def test_malformed_retry_after_falls_back_to_backoff(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway)
    bad = {"Retry-After": "tomorrow-ish", "retry-after-ms": "NaN"}
    mock.push([ScriptStep(status=503, headers=bad), ScriptStep()])
    resp, elapsed = await _post(gateway)
    assert resp.status == 200
    assert elapsed < 1.0
    assert len(mock.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_non_retriable_status_reaches_client_after_one_attempt(
    make_gateway: MakeGateway, mock: MockState, status: int
) -> None:
    gateway = await _gateway(make_gateway)
    mock.push([ScriptStep(status=status, error_code="some_code"), ScriptStep()])
    resp, _ = await _post(gateway)
    assert resp.status == status
    error = (await resp.json())["error"]
    assert (error["message"], error["code"]) == (f"mock {status}", "some_code")
    assert resp.headers["x-should-retry"] == "false"
    assert len(mock.requests) == 1


async def test_429_out_of_quota_is_not_retried(make_gateway: MakeGateway, mock: MockState) -> None:
    gateway = await _gateway(make_gateway)
    mock.push([ScriptStep(status=429, error_code="insufficient_quota"), ScriptStep()])
    resp, _ = await _post(gateway)
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "insufficient_quota"
    assert len(mock.requests) == 1


async def test_provider_saying_should_retry_false_is_not_retried(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway)
    mock.push([ScriptStep(status=503, headers={"x-should-retry": "false"}), ScriptStep()])
    resp, _ = await _post(gateway)
    assert resp.status == 503
    assert len(mock.requests) == 1


async def test_provider_always_503_gets_the_configured_attempts_then_503_passes_through(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway, retry={**FAST_RETRY, "attempts": 4})
    # The provider invites retries; the gateway has done them, so the client must not.
    mock.push([ScriptStep(status=503, headers={"x-should-retry": "true"})] * 10)
    resp, _ = await _post(gateway)
    assert resp.status == 503
    assert (await resp.json())["error"]["message"] == "mock 503"
    assert resp.headers["x-should-retry"] == "false"
    assert resp.headers["x-gateway-attempts"] == "4"
    assert len(mock.requests) == 4


async def test_unreachable_provider_is_retried_then_502(make_gateway: MakeGateway) -> None:
    dead = "http://127.0.0.1:1"
    route = {"name": "chat", "match": {"path": "/v1/*"}, "provider": "openai", "retry": FAST_RETRY}
    gateway = await make_gateway(
        providers={"openai": {"kind": "openai", "base_url": dead + "/v1"}},
        routes=[route],
        keys=[{"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"]}],
    )
    resp, _ = await _post(gateway)
    assert resp.status == 502
    assert resp.headers["x-gateway-attempts"] == "3"
    assert resp.headers["x-should-retry"] == "false"


async def test_answers_breaking_off_on_every_try_are_a_502_billed_for_each_try(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    """The provider answered each time, so it made (and bills) each answer: not a provider
    the gateway "could not reach", and not free."""
    gateway = await _gateway(make_gateway)
    mock.push([ScriptStep(cut_after=10)] * 3)
    resp, _ = await _post(gateway)
    assert (resp.status, resp.headers["x-gateway-attempts"]) == (502, "3")
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_failed"
    assert "answered, but its answer broke off" in error["message"]
    assert float(resp.headers["x-gateway-cost-usd"]) > 0


async def test_per_try_timeout_is_retried_and_the_next_try_answers(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway, retry={**FAST_RETRY, "per_try_timeout_s": 0.2})
    mock.push([ScriptStep(latency_s=2.0), ScriptStep()])
    resp, elapsed = await _post(gateway)
    assert resp.status == 200
    assert 0.2 <= elapsed < 1.5
    assert resp.headers["x-gateway-attempts"] == "2"


async def test_every_try_timing_out_is_504(make_gateway: MakeGateway, mock: MockState) -> None:
    gateway = await _gateway(make_gateway, retry={**FAST_RETRY, "per_try_timeout_s": 0.1})
    mock.push([ScriptStep(latency_s=2.0)] * 3)
    resp, _ = await _post(gateway)
    assert resp.status == 504
    assert "per-try timeout of 0.1s" in (await resp.json())["error"]["message"]
    assert resp.headers["x-gateway-attempts"] == "3"


async def test_hanging_provider_is_504_within_the_deadline_and_no_attempt_starts_after_it(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    retry = {"attempts": 10, "base_s": 0.01, "max_s": 0.01, "per_try_timeout_s": 0.25}
    gateway = await _gateway(make_gateway, timeout_s=0.6, retry=retry)
    mock.push([ScriptStep(latency_s=5.0)] * 10)
    resp, elapsed = await _post(gateway)
    assert resp.status == 504
    assert elapsed < 0.6 + 0.3
    assert "0.6s" in (await resp.json())["error"]["message"]
    tried = len(mock.requests)
    assert tried == int(resp.headers["x-gateway-attempts"]) == 3
    await asyncio.sleep(0.4)
    assert len(mock.requests) == tried


async def test_client_header_shortens_the_deadline(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway, timeout_s=30)
    mock.push([ScriptStep(latency_s=5.0)])
    resp, elapsed = await _post(gateway, {"x-gateway-timeout": "0.3"})
    assert resp.status == 504
    assert elapsed < 1.0
    assert "x-gateway-timeout" in (await resp.json())["error"]["message"]
    assert "x-gateway-timeout" not in mock.requests[0].headers


async def test_client_header_cannot_lengthen_the_deadline(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway, timeout_s=0.3)
    mock.push([ScriptStep(latency_s=5.0)])
    resp, elapsed = await _post(gateway, {"x-gateway-timeout": "60"})
    assert resp.status == 504
    assert elapsed < 1.0


async def test_sdk_read_timeout_shortens_the_deadline_with_a_margin(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway, timeout_s=30)
    mock.push([ScriptStep(latency_s=5.0)])
    resp, elapsed = await _post(gateway, {"x-stainless-read-timeout": "1.0"})
    assert resp.status == 504
    assert 0.85 <= elapsed < 1.0  # answered before the SDK's own timer fires


async def test_retry_budget_bounds_attempts_of_100_concurrent_requests(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway, retry={"attempts": 3, "base_s": 0.0, "max_s": 0.0})
    mock.push([ScriptStep(status=503, latency_s=0.1)] * 400)
    responses = await asyncio.gather(*(_post(gateway) for _ in range(100)))
    assert all(resp.status == 503 for resp, _ in responses)
    # Without a budget: 300. With it, at most 20% of 100 active requests retry at a time;
    # the few still active after that get at most that share again.
    attempts = len(mock.requests)
    assert 100 < attempts <= 100 + 20 + 20
    assert gateway.app[RESILIENCE].snapshot().retry_budget_exhausted["openai"] > 0


async def test_waits_are_the_providers_retry_after_then_jittered_backoff(
    make_gateway: MakeGateway, mock: MockState
) -> None:
    gateway = await _gateway(make_gateway, retry={"attempts": 3, "base_s": 0.5, "max_s": 8})
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    gateway.app[RESILIENCE].sleep = record_sleep
    mock.push([ScriptStep(status=429, headers={"Retry-After": "2"}), ScriptStep(status=503)])
    resp, elapsed = await _post(gateway)
    assert resp.status == 200
    assert elapsed < 0.5  # nothing really slept
    assert waits[0] == 2.0
    assert 0.0 <= waits[1] <= 1.0  # second retry: full jitter below base_s * 2
    assert gateway.app[RESILIENCE].snapshot().retries == {
        ("openai", "http_429"): 1,
        ("openai", "http_503"): 1,
    }

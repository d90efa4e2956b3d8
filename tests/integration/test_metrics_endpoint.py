"""GET /metrics through the gateway app: what traffic shows, bounded labels, in-flight gauges."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import METRICS
from gateway.pricing import bundled
from tests.conftest import KEY_A, sha

Client = TestClient[Any, Any]
MakeGateway = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {KEY_A}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
FEATURES: dict[str, Any] = {
    "routes": [
        {
            "name": "chat",
            "match": {"path": "/v1/chat/completions", "model": "gpt-4o*"},
            "provider": "openai",
            "cache": {"ttl_s": 60},
            "retry": {"attempts": 2, "base_s": 0.01},
        },
        {"name": "openai", "match": {"path": "/v1/*"}, "provider": "openai"},
    ],
    "keys": [
        {
            "name": "team-a",
            "key_sha256": sha(KEY_A),
            "routes": ["*"],
            "budget": {"usd_per_month": 100},
        }
    ],
}


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_traffic_shows_as_requests_tokens_cost_cache_hits_retries_and_budget(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(**FEATURES)
    for _ in range(2):  # a miss, then a hit
        assert (await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)).status == 200
    failing = {**AUTH, "x-mock-status": "503", "cache-control": "no-store"}
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=failing)
    assert resp.status >= 500
    samples = await scrape(gateway)
    ok = {"key": "team-a", "route": "chat", "provider": "openai", "model": "gpt-4o-mini"}
    assert sample(samples, "llm_gateway_requests_total", **ok, status="200", cache="miss") == 1
    assert sample(samples, "llm_gateway_requests_total", **ok, status="200", cache="hit") == 1
    assert sample(samples, "llm_gateway_cache_lookups_total", route="chat", result="hit") == 1
    tokens = {"key": "team-a", "route": "chat", "model": "gpt-4o-mini", "type": "output"}
    assert (sample(samples, "llm_gateway_tokens_total", **tokens) or 0) > 0
    cost = {"key": "team-a", "route": "chat", "model": "gpt-4o-mini"}
    assert (sample(samples, "llm_gateway_cost_usd_total", **cost) or 0) > 0
    retries = {"provider": "openai", "reason": "http_503"}
    assert sample(samples, "llm_gateway_retries_total", **retries) == 1
    budget = {"key": "team-a", "route": "", "period": "month"}
    assert sample(samples, "llm_gateway_budget_limit_usd", **budget) == 100
    assert (sample(samples, "llm_gateway_budget_spent_usd", **budget) or 0) > 0


async def test_unknown_paths_models_and_keys_create_no_new_label_values(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(**FEATURES)
    odd = "zz-unheard-of-7f3a"
    sends = [
        ("/v1/chat/completions", {**CHAT, "model": f"gpt-4o-{odd}"}, AUTH),
        (f"/v1/{odd}", {"model": odd}, AUTH),
        ("/v1/chat/completions", CHAT, {"Authorization": f"Bearer {odd}"}),
        (f"/{odd}", CHAT, AUTH),
    ]
    for path, body, headers in sends:
        await gateway.post(path, json=body, headers=headers)
    resp = await gateway.get("/metrics")
    text = await resp.text()
    assert odd not in text
    config = gateway.app[METRICS]
    allowed = (
        set(config.keys)
        | set(config.routes)
        | set(config.providers)
        | set(bundled())
        | {"none", "other", ""}
    )
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            for name in ("key", "route", "provider", "model"):
                if name in s.labels:
                    assert s.labels[name] in allowed, (s.name, name, s.labels[name])


async def test_in_flight_gauge_counts_a_request_while_it_runs(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    slow = {**AUTH, "x-mock-latency-ms": "400"}
    pending = asyncio.ensure_future(gateway.post("/v1/chat/completions", json=CHAT, headers=slow))
    await asyncio.sleep(0.15)
    during = await scrape(gateway)
    assert sample(during, "llm_gateway_requests_in_flight") == 1
    assert (await pending).status == 200
    after = await scrape(gateway)
    assert sample(after, "llm_gateway_requests_in_flight") == 0


async def test_stream_in_flight_and_time_to_first_token(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    slow = {**AUTH, "x-mock-chunk-delay-ms": "60"}
    resp = await gateway.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=slow)
    await resp.content.readany()
    during = await scrape(gateway)
    assert sample(during, "llm_gateway_streams_in_flight") == 1
    await resp.read()
    after = await scrape(gateway)
    assert sample(after, "llm_gateway_streams_in_flight") == 0
    ttft = {"route": "chat", "model": "gpt-4o-mini"}
    assert sample(after, "llm_gateway_time_to_first_token_seconds_count", **ttft) == 1


async def test_openmetrics_format_when_the_scraper_asks_for_it(gateway: Client) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    resp = await gateway.get("/metrics", headers={"Accept": accept})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await resp.text()).rstrip().endswith("# EOF")


async def test_unreachable_store_counts_request_log_failures_and_still_answers(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(storage={"url": "redis://127.0.0.1:1/0"})
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert resp.status == 200
    for _ in range(50):
        samples = await scrape(gateway)
        if sample(samples, "llm_gateway_request_log_dropped_total"):
            break
        await asyncio.sleep(0.05)
    assert sample(samples, "llm_gateway_request_log_dropped_total") == 1
    assert sample(samples, "llm_gateway_redis_errors_total", operation="request_log") == 1
    assert sample(samples, "llm_gateway_redis_errors_total", operation="metrics_refresh")


async def test_a_refused_request_records_no_upstream_call_and_no_cache_lookup(
    make_gateway: MakeGateway,
) -> None:
    limited = [{**FEATURES["keys"][0], "rate_limit": {"rpm": 1}}]
    gateway = await make_gateway(**{**FEATURES, "keys": limited})
    unsampled = {**CHAT, "temperature": 0.7}  # not cacheable: the cache lets it by
    statuses = []
    for _ in range(3):
        resp = await gateway.post("/v1/chat/completions", json=unsampled, headers=AUTH)
        statuses.append(resp.status)
    assert statuses == [200, 429, 429]
    samples = await scrape(gateway)
    upstream = {"provider": "openai", "model": "gpt-4o-mini"}
    assert sample(samples, "llm_gateway_upstream_duration_seconds_count", **upstream) == 1
    assert sample(samples, "llm_gateway_cache_lookups_total", route="chat", result="bypass") == 1


async def test_a_provider_error_is_no_answer_left_unstored(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(**FEATURES)
    failing = {**AUTH, "x-mock-status": "404"}
    assert (await gateway.post("/v1/chat/completions", json=CHAT, headers=failing)).status == 404
    samples = await scrape(gateway)
    assert (sample(samples, "llm_gateway_cache_not_stored_total") or 0) == 0

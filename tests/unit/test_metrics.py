"""Metrics: bounded labels, what one finished request records, budgets, exported snapshots."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from gateway.circuit import CircuitRegistry
from gateway.config import CircuitConfig, parse_config
from gateway.context import RequestContext, Usage
from gateway.dialects import OPENAI
from gateway.metrics import Metrics, budget_limits, word
from gateway.observe import record_metrics, rejection_reason, status_label
from gateway.resilience import RESILIENCE, Resilience
from gateway.runtime import Runtime
from gateway.stats_export import SnapshotExporter, set_month_costs
from tests.conftest import base_config, sha

CONFIG = base_config(
    "http://127.0.0.1:9",
    keys=[
        {
            "name": "team-a",
            "key_sha256": sha("a"),
            "routes": ["*"],
            "budget": {"usd_per_month": 100, "usd_per_day": 5},
            "route_budgets": {"chat": {"usd_per_month": 20}},
        }
    ],
)


@pytest.fixture
def runtime() -> Runtime:
    return Runtime.build(parse_config(CONFIG, "<test>"))


@pytest.fixture
def metrics(runtime: Runtime) -> Metrics:
    return Metrics(CollectorRegistry(), runtime)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def recorded(m: Metrics, *contexts: RequestContext) -> None:
    """Record finished requests, then fold them into the families as a scrape does."""
    for ctx in contexts:
        record_metrics(m, ctx)
    m.fold()


def finished(runtime: Runtime, **fields: Any) -> RequestContext:
    """A context as `finish` sees it: routed to chat/openai for key team-a unless told."""
    request = make_mocked_request("POST", "/v1/chat/completions", app=web.Application())
    ctx = RequestContext(request=request, runtime=runtime, request_id="r1", dialect=OPENAI)
    ctx.key = runtime.config.keys[0]
    ctx.route = runtime.routes[0].config
    ctx.provider = runtime.routes[0].provider
    ctx.upstream_model = "gpt-4o-mini"
    ctx.status = 200
    for name, val in fields.items():
        setattr(ctx, name, val)
    return ctx


def test_model_label_keeps_config_and_price_table_models_and_hides_others(
    metrics: Metrics,
) -> None:
    assert metrics.model("gpt-4o-mini") == "gpt-4o-mini"  # bundled price table
    assert metrics.model("claude-made-up-99") == "other"
    assert metrics.model(None) == "none"


def test_unknown_names_become_other(metrics: Metrics) -> None:
    assert metrics.key("intruder") == "other"
    assert metrics.route("nope") == "other"
    assert metrics.provider("elsewhere") == "other"
    assert word("http_503") == "http_503"
    assert word("DROP TABLE;") == "other"


def test_successful_request_counts_request_tokens_cost_and_latency(
    runtime: Runtime, metrics: Metrics
) -> None:
    usage = Usage(input_tokens=100, output_tokens=20, cached_input_tokens=30)
    ctx = finished(runtime, usage=usage, cost_micro=1500, cache_status="MISS")
    recorded(metrics, ctx)
    common = {"key": "team-a", "route": "chat", "model": "gpt-4o-mini"}
    requests = {**common, "provider": "openai", "status": "200", "cache": "miss"}
    assert value(metrics, "llm_gateway_requests_total", **requests) == 1
    assert value(metrics, "llm_gateway_tokens_total", **common, type="input") == 70
    assert value(metrics, "llm_gateway_tokens_total", **common, type="cached") == 30
    assert value(metrics, "llm_gateway_tokens_total", **common, type="output") == 20
    assert value(metrics, "llm_gateway_cost_usd_total", **common) == pytest.approx(0.0015)
    duration = {"route": "chat", "model": "gpt-4o-mini"}
    assert value(metrics, "llm_gateway_request_duration_seconds_count", **duration) == 1
    assert value(metrics, "llm_gateway_cache_lookups_total", route="chat", result="miss") == 1


def test_cache_hit_counts_money_saved_and_no_billed_tokens(
    runtime: Runtime, metrics: Metrics
) -> None:
    usage = Usage(input_tokens=100, output_tokens=20)
    ctx = finished(runtime, usage=usage, cost_micro=0, saved_micro=2_000_000, cache_status="HIT")
    recorded(metrics, ctx)
    common = {"key": "team-a", "route": "chat", "model": "gpt-4o-mini"}
    assert value(metrics, "llm_gateway_tokens_total", **common, type="input") is None
    assert value(metrics, "llm_gateway_cache_saved_usd_total", key="team-a", route="chat") == 2
    assert value(metrics, "llm_gateway_cache_saved_tokens_total", route="chat") == 120
    assert value(metrics, "llm_gateway_cache_lookups_total", route="chat", result="hit") == 1


def test_stream_records_time_to_first_token_and_buffered_answer_does_not(
    runtime: Runtime, metrics: Metrics
) -> None:
    recorded(
        metrics,
        finished(runtime, stream=True, ttfb_s=0.3),
        finished(runtime, stream=False, ttfb_s=0.5),
    )
    labels = {"route": "chat", "model": "gpt-4o-mini"}
    assert value(metrics, "llm_gateway_time_to_first_token_seconds_count", **labels) == 1
    assert value(metrics, "llm_gateway_time_to_first_token_seconds_sum", **labels) == 0.3


def test_requests_reach_the_families_at_each_fold_once(runtime: Runtime, metrics: Metrics) -> None:
    labels = {
        "key": "team-a",
        "route": "chat",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "status": "200",
        "cache": "none",
    }
    record_metrics(metrics, finished(runtime))
    record_metrics(metrics, finished(runtime))
    assert value(metrics, "llm_gateway_requests_total", **labels) is None  # not folded yet
    metrics.fold()
    metrics.fold()  # nothing new: nothing added twice
    assert value(metrics, "llm_gateway_requests_total", **labels) == 2
    recorded(metrics, finished(runtime, status=429))
    assert value(metrics, "llm_gateway_requests_total", **labels) == 2
    assert value(metrics, "llm_gateway_requests_total", **{**labels, "status": "429"}) == 1


def test_a_folded_histogram_equals_the_same_observations_made_one_by_one(
    runtime: Runtime,
) -> None:
    # Bounds exactly, just above them, zero, past the last bound: every bucket's edge.
    seconds = [0.0, 0.025, 0.0251, 0.05, 1, 1.0001, 7.9, 600, 600.5, 1e9, 0.3, 0.3]
    folded, direct = Metrics(CollectorRegistry(), runtime), Metrics(CollectorRegistry(), runtime)
    for s in seconds:
        folded.observe(folded.request_duration, ("chat", "gpt-4o-mini"), s)
        folded.observe(folded.ttft, ("chat", "gpt-4o-mini"), s / 100)
        direct.request_duration.labels("chat", "gpt-4o-mini").observe(s)
        direct.ttft.labels("chat", "gpt-4o-mini").observe(s / 100)
    folded.fold()

    def samples(m: Metrics) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, s.labels, s.value)
            for family in m.registry.collect()
            if family.name
            in ("llm_gateway_request_duration_seconds", "llm_gateway_time_to_first_token_seconds")
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    assert samples(folded) == samples(direct)
    assert (
        value(
            folded, "llm_gateway_request_duration_seconds_count", route="chat", model="gpt-4o-mini"
        )
        == 12
    )


@pytest.mark.parametrize(
    ("status", "outcome", "code", "reason"),
    [
        (401, "rejected", "invalid_api_key", "auth"),
        (403, "rejected", "model_not_allowed", "forbidden"),
        (429, "rejected", "insufficient_quota", "budget"),
        (429, "rejected", "rate_limit_exceeded", "rate_limit"),
        (413, "rejected", "request_too_large", "too_large"),
        (503, "failed", "budget_store_unavailable", "unavailable"),
        (429, "provider_error", None, None),  # the provider's own 429 is not the gateway's
        (502, "failed", "upstream_failed", None),
        (200, "ok", None, None),
    ],
)
def test_rejection_reason_follows_status_and_code(
    runtime: Runtime, status: int, outcome: str, code: str | None, reason: str | None
) -> None:
    ctx = finished(runtime, status=status, outcome=outcome, error_code=code)
    assert rejection_reason(ctx) == reason


def test_client_gone_before_any_status_is_labelled_499(runtime: Runtime) -> None:
    assert status_label(finished(runtime, status=None, outcome="client_disconnected")) == "499"


def test_anomalies_are_counted_by_kind_and_unknown_kinds_become_other(
    runtime: Runtime, metrics: Metrics
) -> None:
    recorded(metrics, finished(runtime, anomalies=["empty", "truncated", "weird<x>"]))
    labels = {"route": "chat", "model": "gpt-4o-mini"}
    for kind in ("empty", "truncated", "other"):
        assert value(metrics, "llm_gateway_output_anomalies_total", **labels, kind=kind) == 1


def test_budget_limits_of_config_are_exported_at_start(metrics: Metrics) -> None:
    spent = "llm_gateway_budget_limit_usd"
    assert value(metrics, spent, key="team-a", route="", period="month") == 100
    assert value(metrics, spent, key="team-a", route="", period="day") == 5
    assert value(metrics, spent, key="team-a", route="chat", period="month") == 20
    assert len(budget_limits(parse_config(CONFIG, "<test>"))) == 3


def test_set_budget_and_alert_label_by_key_and_route(metrics: Metrics) -> None:
    metrics.set_budget("kr:team-a:chat", "month", 12.5, 20)
    metrics.budget_alert("k:team-a", 80)
    metrics.set_budget("k:stranger", "month", 1, 2)
    spent = "llm_gateway_budget_spent_usd"
    assert value(metrics, spent, key="team-a", route="chat", period="month") == 12.5
    alerts = "llm_gateway_budget_alerts_total"
    assert value(metrics, alerts, key="team-a", route="", percent="80") == 1
    assert value(metrics, spent, key="other", route="", period="month") == 1


def test_month_costs_from_store_statistics_by_key_and_model(metrics: Metrics) -> None:
    stats = {"k:team-a:cost": 2_500_000, "m:gpt-4o-mini:cost": 2_000_000, "k:team-a:in": 7}
    set_month_costs(metrics, stats)
    assert value(metrics, "llm_gateway_key_month_cost_usd", key="team-a") == 2.5
    assert value(metrics, "llm_gateway_model_month_cost_usd", model="gpt-4o-mini") == 2


def test_month_costs_start_again_from_zero_in_a_new_month(metrics: Metrics) -> None:
    """The new month's hash has no cost yet for a key or model: their gauges are 0, not the
    month before's, until they spend again."""
    set_month_costs(metrics, {"k:team-a:cost": 2_500_000, "m:gpt-4o-mini:cost": 2_000_000})
    set_month_costs(metrics, {"m:gpt-4o-mini:cost": 1_000_000})
    assert value(metrics, "llm_gateway_key_month_cost_usd", key="team-a") == 0
    assert value(metrics, "llm_gateway_model_month_cost_usd", model="gpt-4o-mini") == 1


def test_names_sharing_the_other_label_add_up(metrics: Metrics) -> None:
    set_month_costs(metrics, {"m:mystery-1:cost": 1_000_000, "m:mystery-2:cost": 500_000})
    assert value(metrics, "llm_gateway_model_month_cost_usd", model="other") == 1.5


def test_redis_error_counts_by_operation(metrics: Metrics) -> None:
    metrics.redis_error("cache_get")
    metrics.redis_error("cache_get")
    assert value(metrics, "llm_gateway_redis_errors_total", operation="cache_get") == 2


def test_exporter_adds_only_what_resilience_counters_grew_by(metrics: Metrics) -> None:
    app = web.Application()
    resilience = Resilience()
    app[RESILIENCE] = resilience
    exporter = SnapshotExporter(metrics)
    resilience.stats.attempts[("openai", "http_503")] += 2
    resilience.stats.retries[("openai", "http_503")] += 1
    exporter.sync(app)
    resilience.stats.attempts[("openai", "http_503")] += 3
    exporter.sync(app)
    exporter.sync(app)
    attempts = "llm_gateway_upstream_attempts_total"
    assert value(metrics, attempts, provider="openai", outcome="http_503") == 5
    assert value(metrics, "llm_gateway_retries_total", provider="openai", reason="http_503") == 1


def test_exporter_shows_open_circuit_with_bounded_model(metrics: Metrics) -> None:
    app = web.Application()
    app[RESILIENCE] = resilience = Resilience()
    for model in ("gpt-4o-mini", "made-up-model"):
        circuit = resilience.circuits.get("openai", model, CircuitConfig(failures=1))
        permit = circuit.allow()
        assert permit is not None
        circuit.record(permit, ok=False)
    resilience.circuits.get("anthropic", "claude-x", CircuitConfig())
    SnapshotExporter(metrics).sync(app)
    state = "llm_gateway_circuit_state"
    assert value(metrics, state, provider="openai", model="gpt-4o-mini") == 2
    assert value(metrics, state, provider="openai", model="other") == 2
    assert value(metrics, state, provider="anthropic", model="other") == 0


def test_label_values_follow_a_reloaded_config(runtime: Runtime) -> None:
    metrics = Metrics(CollectorRegistry(), runtime)
    names = ("team-a", "chat", "openai", "gpt-4o-mini")
    assert metrics.labels(names) == names
    assert metrics.labels(("team-b", "chat", "openai", "gpt-4o-mini"))[0] == "other"
    config = dict(CONFIG, keys=[{**CONFIG["keys"][0], "name": "team-b"}])
    metrics.follow(Runtime.build(parse_config(config, "<test>")))
    assert metrics.labels(names)[0] == "other"  # remembered under the old config: not kept
    assert metrics.labels(("team-b", "chat", "openai", "gpt-4o-mini"))[0] == "team-b"


def test_a_request_recorded_after_a_reload_is_labelled_by_the_new_config(
    runtime: Runtime,
) -> None:
    metrics = Metrics(CollectorRegistry(), runtime)
    ctx = finished(runtime)  # key team-a
    recorded(metrics, ctx)
    config = dict(CONFIG, keys=[{**CONFIG["keys"][0], "name": "team-b"}])
    metrics.follow(Runtime.build(parse_config(config, "<test>")))
    recorded(metrics, ctx)  # the same kind of request: its labels are not the remembered ones
    labels = {"route": "chat", "provider": "openai", "model": "gpt-4o-mini", "cache": "none"}
    assert value(metrics, "llm_gateway_requests_total", key="team-a", status="200", **labels) == 1
    assert value(metrics, "llm_gateway_requests_total", key="other", status="200", **labels) == 1


def test_exporter_shows_a_circuit_past_its_cooldown_as_half_open(metrics: Metrics) -> None:
    clock = [1000.0]
    app = web.Application()
    app[RESILIENCE] = resilience = Resilience(circuits=CircuitRegistry(clock=lambda: clock[0]))
    circuit = resilience.circuits.get("openai", "gpt-4o-mini", CircuitConfig(failures=1))
    permit = circuit.allow()
    assert permit is not None
    circuit.record(permit, ok=False)
    exporter = SnapshotExporter(metrics)
    exporter.sync(app)
    state = "llm_gateway_circuit_state"
    assert value(metrics, state, provider="openai", model="gpt-4o-mini") == 2
    clock[0] += CircuitConfig().cooldown_s
    exporter.sync(app)
    assert value(metrics, state, provider="openai", model="gpt-4o-mini") == 1

"""Which amount a request reserves and what it is billed, rule by rule."""

from __future__ import annotations

from typing import Any
from unittest.mock import MagicMock

import orjson
import pytest

from gateway.accounting import Plan, bill, plan_for
from gateway.config import PriceConfig, parse_config
from gateway.context import RequestContext, Usage
from gateway.dialects import OPENAI
from gateway.pricing import Price
from gateway.runtime import Runtime
from tests.conftest import base_config

PRICE = Price.of(PriceConfig(input=1, output=10))  # micro-dollars per token: 1 in, 10 out


def _ctx(
    payload: dict[str, Any], path: str = "/v1/chat/completions", **config: Any
) -> RequestContext:
    runtime = Runtime.build(parse_config(base_config("http://127.0.0.1:1", **config), "<t>"))
    request = MagicMock()
    request.method, request.path = "POST", path
    ctx = RequestContext(request=request, runtime=runtime, request_id="r1", dialect=OPENAI)
    ctx.payload, ctx.model, ctx.upstream_model = payload, payload["model"], payload["model"]
    ctx.upstream_body = orjson.dumps(payload)
    ctx.key = runtime.config.keys[0]
    ctx.route, ctx.provider = runtime.routes[0].config, runtime.routes[0].provider
    return ctx


def _plan(**kw: Any) -> Plan:
    fields: dict[str, Any] = {
        "billable": True,
        "model": "x",
        "price": PRICE,
        "input_estimate": 10,
        "amount_micro": 5000,
        "tokens": 510,
        "scopes": (),
        "rpm": 0,
        "tpm": 0,
    }
    return Plan(**{**fields, **kw})


def test_reservation_uses_the_requests_max_tokens() -> None:
    ctx = _ctx({"model": "gpt-4o", "max_tokens": 100, "messages": []})
    plan = plan_for(ctx)
    # gpt-4o: $2.50 in, $10 out per 1M tokens; input estimated at a quarter of the body.
    assert plan.tokens == plan.input_estimate + 100
    assert plan.amount_micro == -(-(plan.input_estimate * 2_500_000 + 100 * 10_000_000) // 10**6)


def test_reservation_falls_back_to_the_routes_default_cap() -> None:
    plan = plan_for(_ctx({"model": "gpt-4o", "messages": []}))
    assert plan.tokens == plan.input_estimate + 4096


def test_embeddings_reserve_no_output() -> None:
    plan = plan_for(_ctx({"model": "text-embedding-3-small", "input": "x"}, "/v1/embeddings"))
    assert plan.tokens == plan.input_estimate


def test_unpriced_model_reserves_the_configured_flat_amount() -> None:
    ctx = _ctx({"model": "mystery", "messages": []}, accounting={"unpriced_request_usd": 0.3})
    plan = plan_for(ctx)
    assert (plan.price, plan.amount_micro) == (None, 300_000)


def test_bill_prices_the_usage_report() -> None:
    ctx = _ctx({"model": "x", "messages": []})
    ctx.attempts, ctx.usage = 1, Usage(input_tokens=100, output_tokens=20)
    assert bill(ctx, _plan()) == (300, "usage", 120)


def test_bill_of_a_cache_hit_is_zero_and_records_the_saving() -> None:
    ctx = _ctx({"model": "x", "messages": []})
    ctx.cache_status, ctx.usage = "HIT", Usage(input_tokens=100, output_tokens=20)
    assert bill(ctx, _plan()) == (0, "cache", 0)
    assert ctx.saved_micro == 300


@pytest.mark.parametrize("outcome", ["stream_interrupted", "client_disconnected"])
def test_bill_of_a_cut_stream_is_estimated_from_delivered_events(outcome: str) -> None:
    ctx = _ctx({"model": "x", "messages": []})
    ctx.attempts, ctx.outcome, ctx.stream_events = 1, outcome, 7
    assert bill(ctx, _plan()) == (10 + 70, "estimate", 17)


def test_bill_without_usage_after_a_timeout_is_the_reservation() -> None:
    ctx = _ctx({"model": "x", "messages": []})
    ctx.attempts, ctx.status = 1, 504
    assert bill(ctx, _plan()) == (5000, "reserved", 510)


@pytest.mark.parametrize(
    ("answered", "usage", "status", "outcome", "cut", "expected"),
    [
        # A hedge that lost, beside an answer with usage: the answer, plus its reservation.
        (True, Usage(input_tokens=100, output_tokens=20), 200, "ok", 1, (5300, "usage", 630)),
        # Two tries cut by their per-try timeout, then an answer.
        (True, Usage(input_tokens=100, output_tokens=20), 200, "ok", 2, (10300, "usage", 1140)),
        # Cut tries, then the provider's error: the error costs nothing, the cut tries do.
        (False, None, 500, "provider_error", 1, (5000, "reserved", 510)),
        # The client left while a try was out: that try is the request's own charge.
        (False, None, 499, "client_disconnected", 1, (5000, "reserved", 510)),
        # ... while a hedged pair was out: both.
        (False, None, 499, "client_disconnected", 2, (10000, "reserved", 1020)),
        # Every try cut by its timeout, then the deadline: each try once.
        (False, None, 504, "failed", 3, (15000, "reserved", 1530)),
        # A malformed answer (its own reservation) after a try cut by its timeout.
        (True, None, 200, "malformed_answer", 1, (10000, "reserved", 1020)),
        (True, Usage(input_tokens=100, output_tokens=20), 200, "ok", 0, (300, "usage", 120)),
    ],
)
def test_every_try_cut_while_the_provider_worked_is_billed_at_its_reservation(
    answered: bool,
    usage: Usage | None,
    status: int,
    outcome: str,
    cut: int,
    expected: tuple[int, str, int],
) -> None:
    ctx = _ctx({"model": "x", "messages": []})
    ctx.attempts, ctx.cut_tries, ctx.usage = cut + 1, cut, usage
    ctx.status, ctx.outcome = status, outcome
    ctx.ttfb_s = 0.1 if answered else None
    assert bill(ctx, _plan()) == expected


def test_bill_of_a_provider_error_is_zero() -> None:
    ctx = _ctx({"model": "x", "messages": []})
    ctx.attempts, ctx.status, ctx.outcome = 1, 503, "provider_error"
    assert bill(ctx, _plan()) == (0, "none", 0)


def test_bill_of_an_unpriced_model_is_its_reservation_even_with_usage() -> None:
    ctx = _ctx({"model": "x", "messages": []})
    ctx.attempts, ctx.usage = 1, Usage(input_tokens=1, output_tokens=1)
    assert bill(ctx, _plan(price=None)) == (5000, "unpriced", 2)


@pytest.mark.parametrize(
    ("fields", "answers"),
    [
        ({"n": 3}, 3),
        ({"n": 1}, 1),
        ({"n": 0}, 1),  # not a count: the provider refuses it, one answer is the floor
        ({"n": True}, 1),
        ({"n": "4"}, 4),  # as a lenient server reads it: held, lest it spend unreserved
        ({"n": 2.5}, 3),  # rounded up
        ({"n": "x"}, 1),
        ({"best_of": 5, "n": 2}, 5),  # legacy completions: best_of generated, billed
    ],
)
def test_reservation_holds_the_cap_for_every_answer_asked_for(
    fields: dict[str, Any], answers: int
) -> None:
    plan = plan_for(_ctx({"model": "gpt-4o", "max_tokens": 100, "messages": [], **fields}))
    assert plan.tokens == plan.input_estimate + 100 * answers
    out = 100 * answers * 10_000_000
    assert plan.amount_micro == -(-(plan.input_estimate * 2_500_000 + out) // 10**6)


@pytest.mark.parametrize(
    ("value", "held"),
    [
        (20_000_000, 20_000_000),
        (2e7, 20_000_000),  # a float, as some servers take it
        ("20000000", 20_000_000),
        (" 300 ", 300),
        (1e23, 10**12),  # beyond 64 bits (read as a float): held at the cap
        (99.5, 100),
        ("lots", 4096),  # no count: the route's default
        (True, 4096),
        (-5, 4096),
        (None, 4096),
    ],
)
def test_max_tokens_is_held_however_a_lenient_server_would_read_it(value: Any, held: int) -> None:
    """A server that takes `2e7` or `"20000000"` as its cap would spend it: the reservation
    holds it, so the budget check sees it."""
    plan = plan_for(_ctx({"model": "gpt-4o", "max_tokens": value, "messages": []}))
    assert plan.tokens == plan.input_estimate + held


def test_the_routes_default_cap_is_held_for_every_answer_too() -> None:
    plan = plan_for(_ctx({"model": "gpt-4o", "n": 2, "messages": []}))
    assert plan.tokens == plan.input_estimate + 2 * 4096


@pytest.mark.parametrize(
    ("status", "outcome", "expected"),
    [
        (200, "ok", (5000, "unpriced", 510)),  # answered (without a usage report)
        (504, "failed", (5000, "unpriced", 510)),  # the deadline passed while it worked
        (200, "malformed_answer", (5000, "unpriced", 510)),
        (500, "provider_error", (0, "none", 0)),  # the provider refused: it bills nothing
        (400, "provider_error", (0, "none", 0)),
        (502, "ok", (0, "none", 0)),  # unreachable, as priced before the outcome is set
        (502, "failed", (0, "none", 0)),
    ],
)
def test_an_unpriced_model_is_billed_flat_only_where_a_priced_one_would_cost(
    status: int, outcome: str, expected: tuple[int, str, int]
) -> None:
    ctx = _ctx({"model": "x", "messages": []})
    ctx.attempts, ctx.status, ctx.outcome = 1, status, outcome
    assert bill(ctx, _plan(price=None)) == expected


def test_a_stream_cut_after_its_final_usage_report_is_billed_from_the_report() -> None:
    ctx = _ctx({"model": "x", "messages": []})
    ctx.attempts, ctx.outcome, ctx.stream_events = 1, "stream_interrupted", 7
    ctx.usage, ctx.usage_final = Usage(input_tokens=4, output_tokens=4), True
    assert bill(ctx, _plan()) == (4 + 40, "usage", 8)


def test_a_cut_stream_is_logged_with_the_tokens_it_was_billed_for() -> None:
    """Anthropic reports the input at the start: the output is estimated from the events
    delivered, and the request's usage (its log line, its statistics) says so."""
    ctx = _ctx({"model": "x", "messages": []})
    ctx.attempts, ctx.outcome, ctx.stream_events = 1, "client_disconnected", 4
    ctx.usage = Usage(input_tokens=10, output_tokens=1)
    assert bill(ctx, _plan()) == (10 + 40, "estimate", 14)
    assert ctx.usage == Usage(input_tokens=10, output_tokens=4)
    assert bill(ctx, _plan()) == (10 + 40, "estimate", 14)  # asked again: the same bill


def test_a_fallback_that_answers_is_billed_at_its_own_models_price() -> None:
    """The plan priced the route's model; a fallback to another model answered."""
    ctx = _ctx({"model": "gpt-4o", "messages": []})
    plan = plan_for(ctx)
    ctx.upstream_model = "gpt-4.1-mini"  # as the upstream stage records the answering target
    ctx.attempts, ctx.usage = 2, Usage(input_tokens=5, output_tokens=5)
    # gpt-4.1-mini: $0.40 in, $1.60 out per 1M tokens (gpt-4o: $2.50 and $10).
    assert bill(ctx, plan) == (10, "usage", 10)
    ctx.upstream_model = "mystery-fallback"  # unpriced: billed flat, not at gpt-4o's price
    assert bill(ctx, plan) == (50_000, "unpriced", 10)

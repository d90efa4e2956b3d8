"""Per-request cache decisions: endpoints, Cache-Control, the TTL header and temperature."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.cache.policy import (
    Plan,
    cache_directives,
    endpoint_kind,
    is_deterministic,
    plan_request,
    requested_ttl,
)
from gateway.config import CacheConfig
from gateway.errors import BadRequest

CHAT = {"model": "m", "temperature": 0, "messages": []}


def headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in values.items()}))


@pytest.mark.parametrize(
    ("method", "path", "provider", "kind"),
    [
        ("POST", "/v1/chat/completions", "openai", "chat"),
        ("POST", "/v1/completions", "openai", "completion"),
        ("POST", "/v1/embeddings", "openai", "embedding"),
        ("POST", "/v1/messages", "anthropic", "message"),
        ("POST", "/v1/responses", "openai", None),
        ("POST", "/v1/messages/count_tokens", "anthropic", None),
        ("GET", "/v1/models", "openai", None),
        ("GET", "/v1/chat/completions", "openai", None),
        ("POST", "/v1/chat/completions", "anthropic", None),
    ],
)
def test_only_known_answer_endpoints_are_cacheable(
    method: str, path: str, provider: str, kind: str | None
) -> None:
    assert endpoint_kind(method, path, provider) == kind


def test_cache_control_directives_are_case_insensitive_and_ignore_values() -> None:
    raw = CIMultiDict([("Cache-Control", "No-Cache, max-age=0"), ("cache-control", "no-store")])
    assert cache_directives(CIMultiDictProxy(raw)) == {"no-cache", "max-age", "no-store"}


def test_ttl_header_shortens_but_never_lengthens_the_route_ttl() -> None:
    assert requested_ttl(headers(), 600) == 600
    assert requested_ttl(headers(x_gateway_cache_ttl="30"), 600) == 30
    assert requested_ttl(headers(x_gateway_cache_ttl="9000"), 600) == 600


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "soon", "", "1_000", "+3"])
def test_invalid_ttl_header_is_400(value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        requested_ttl(headers(x_gateway_cache_ttl=value), 600)
    assert caught.value.code == "invalid_cache_ttl"


@pytest.mark.parametrize(
    ("payload", "deterministic"),
    [
        ({"temperature": 0}, True),
        ({"temperature": 0.0}, True),
        ({"temperature": 0.2}, False),
        ({}, False),  # the provider's default temperature is 1
        ({"temperature": None}, False),
        ({"temperature": "0"}, False),
        ({"temperature": False}, False),
    ],
)
def test_only_temperature_zero_is_deterministic(
    payload: dict[str, Any], deterministic: bool
) -> None:
    assert is_deterministic("chat", payload) is deterministic


def test_embeddings_are_deterministic_without_a_temperature() -> None:
    assert is_deterministic("embedding", {"input": "x"})


def _plan(
    payload: dict[str, Any] | None = CHAT, config: CacheConfig | None = None, **hdrs: str
) -> Plan:
    return plan_request(
        "POST", "/v1/chat/completions", headers(**hdrs), payload, "openai", config or CacheConfig()
    )


def test_plain_deterministic_request_reads_and_writes() -> None:
    plan = _plan()
    assert (plan.kind, plan.read, plan.write, plan.ttl_s) == ("chat", True, True, 3600)


def test_no_cache_skips_the_read_but_refreshes_the_entry() -> None:
    plan = _plan(cache_control="no-cache")
    assert (plan.read, plan.write) == (False, True)


def test_no_store_neither_reads_nor_writes() -> None:
    plan = _plan(cache_control="no-store")
    assert (plan.read, plan.write) == (False, False)


def test_sampled_request_bypasses_unless_the_route_opts_in() -> None:
    sampled = {**CHAT, "temperature": 0.7}
    assert not _plan(sampled).write
    assert _plan(sampled, CacheConfig(cache_nondeterministic=True)).read


def test_non_json_body_bypasses() -> None:
    assert not _plan(None).write

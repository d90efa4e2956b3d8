"""Header filtering in both directions."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.headers import downstream_headers, upstream_headers


def _proxy(pairs: list[tuple[str, str]]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_upstream_drops_gateway_key_hop_by_hop_and_forwarding_headers() -> None:
    client = _proxy(
        [
            ("Authorization", "Bearer gk-secret"),
            ("x-api-key", "gk-secret"),
            ("Connection", "keep-alive, X-Private"),
            ("X-Private", "1"),
            ("TE", "trailers"),
            ("Expect", "100-continue"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("x-gateway-cache-ttl", "5"),
            ("Cookie", "a=b"),
            ("Content-Length", "12"),
            ("OpenAI-Beta", "assistants=v2"),
            ("anthropic-version", "2023-06-01"),
        ]
    )
    out = upstream_headers(client, {"Authorization": "Bearer sk-provider"}, {})
    assert dict(out) == {
        "OpenAI-Beta": "assistants=v2",
        "anthropic-version": "2023-06-01",
        "Authorization": "Bearer sk-provider",
    }


def test_upstream_defaults_apply_only_when_client_sent_none() -> None:
    defaults = {"anthropic-version": "2023-06-01"}
    assert upstream_headers(_proxy([]), {}, defaults)["anthropic-version"] == "2023-06-01"
    sent = _proxy([("anthropic-version", "2099-01-01")])
    assert upstream_headers(sent, {}, defaults)["anthropic-version"] == "2099-01-01"


def test_downstream_drops_framing_cookies_and_provider_account_headers() -> None:
    upstream = _proxy(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", "99"),
            ("Content-Encoding", "gzip"),
            ("Transfer-Encoding", "chunked"),
            ("Set-Cookie", "__cf_bm=x"),
            ("openai-organization", "acme-corp"),
            ("x-ratelimit-remaining-requests", "10"),
            ("x-request-id", "req_8f2c"),
        ]
    )
    assert dict(downstream_headers(upstream)) == {
        "Content-Type": "application/json",
        "x-ratelimit-remaining-requests": "10",
        "x-gateway-upstream-request-id": "req_8f2c",  # x-request-id is the gateway's own
    }

"""What the cache may do with one request: the endpoint, Cache-Control, TTL, temperature."""

from __future__ import annotations

import re
from typing import Any, Literal

from multidict import CIMultiDictProxy

from gateway.config import CacheConfig
from gateway.errors import BadRequest
from gateway.records import record

Kind = Literal["chat", "completion", "embedding", "message"]

# The endpoints whose answers the cache can check for completeness and replay in both forms,
# with the provider kind that speaks them. Everything else (the Responses API with its
# server-side state, token counting, files, models) goes straight upstream.
ENDPOINTS: dict[str, tuple[Kind, str]] = {
    "/v1/chat/completions": ("chat", "openai"),
    "/v1/completions": ("completion", "openai"),
    "/v1/embeddings": ("embedding", "openai"),
    "/v1/messages": ("message", "anthropic"),
}
TTL_HEADER = "x-gateway-cache-ttl"
_SECONDS = re.compile(r"^[0-9]{1,9}$")
_NO_DIRECTIVES: frozenset[str] = frozenset()
_NUMBER = (int, float)  # a tuple: `int | float` would build a union type on every call


@record
class Plan:
    """The cache's part in one request."""

    kind: Kind | None
    read: bool  # look the answer up, and share one upstream call with identical requests
    write: bool  # store the answer if it is a complete success
    ttl_s: int
    stale_s: float


def endpoint_kind(method: str, path: str, provider_kind: str) -> Kind | None:
    found = ENDPOINTS.get(path)
    if method != "POST" or found is None or found[1] != provider_kind:
        return None
    return found[0]


def cache_directives(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """The request's Cache-Control directive names, lower-cased (`no-cache`, `no-store`)."""
    values = headers.getall("cache-control", ())
    if not values:  # as most requests
        return _NO_DIRECTIVES
    return frozenset(
        part.split("=", 1)[0].strip().lower() for value in values for part in value.split(",")
    )


def requested_ttl(headers: CIMultiDictProxy[str], route_ttl_s: int) -> int:
    """`x-gateway-cache-ttl` may shorten the route's TTL, never lengthen it."""
    raw = headers.get(TTL_HEADER)
    if raw is None:
        return route_ttl_s
    if not _SECONDS.match(raw.strip()) or int(raw) <= 0:
        raise BadRequest(
            f"The header '{TTL_HEADER}' must be a whole number of seconds greater than 0.",
            code="invalid_cache_ttl",
        )
    return min(int(raw), route_ttl_s)


def is_deterministic(kind: Kind, payload: dict[str, Any]) -> bool:
    """Whether the request asks for temperature 0.

    An absent temperature means the provider's default, which is 1 for OpenAI and Anthropic:
    a sampled answer, so it counts as non-deterministic. Embeddings do not sample.
    """
    if kind == "embedding":
        return True
    value = payload.get("temperature")
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and value == 0


def plan_request(
    method: str,
    path: str,
    headers: CIMultiDictProxy[str],
    payload: dict[str, Any] | None,
    provider_kind: str,
    config: CacheConfig,
) -> Plan:
    """Decide reading and writing for a request on a route whose cache is enabled."""
    kind = endpoint_kind(method, path, provider_kind)
    ttl = requested_ttl(headers, config.ttl_s)
    directives = cache_directives(headers)
    cacheable = (
        kind is not None
        and payload is not None
        and "no-store" not in directives
        and (config.cache_nondeterministic or is_deterministic(kind, payload))
    )
    return Plan(
        kind=kind,
        read=cacheable and "no-cache" not in directives,
        write=cacheable,
        ttl_s=ttl,
        stale_s=config.stale_s,
    )

"""Which headers cross the gateway, in each direction, and which never do."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet

from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 §7.6.1: meaningful for one connection only.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)

# SECURITY: the client's gateway key, cookies and forwarding claims never reach the provider;
# the gateway sets framing, encoding and the provider's own credentials itself.
_NOT_UPSTREAM = frozenset(
    {
        "host",
        "content-length",
        "content-encoding",  # the body goes upstream as the gateway read it: inflated
        # Answered by the gateway, which has the whole body before it calls the provider: sent
        # on, it would have the request wait for the provider's 100 Continue (a round trip,
        # or, from one that sends none, the whole deadline).
        "expect",
        "accept-encoding",
        "authorization",
        "x-api-key",
        "api-key",
        "cookie",
        "forwarded",
        "x-real-ip",
        "x-request-id",
        # Which organisation or project of the operator's key pays is the config's to say
        # (a provider's `headers:`), not a client's.
        "openai-organization",
        "openai-project",
    }
)
_NOT_UPSTREAM_PREFIXES = ("x-forwarded-", "x-gateway-")

# SECURITY: headers that identify the operator's provider account or set cookies on the
# client stay behind; framing headers are recomputed for the (decompressed) body. A
# provider's `x-gateway-*` (another gateway upstream: its cost, cache result, the budget of
# the key this gateway holds there) would pass for this gateway's own.
_NOT_DOWNSTREAM = frozenset(
    {
        "content-length",
        "content-encoding",
        "set-cookie",
        "openai-organization",
        "openai-project",
        "anthropic-organization-id",
        "x-request-id",
    }
)
_NOT_DOWNSTREAM_PREFIX = "x-gateway-"

# SECURITY: headers through which a client could choose the upstream; refused with 400.
UPSTREAM_CHOOSING_HEADERS = frozenset(
    {
        "api-base",
        "x-api-base",
        "base-url",
        "x-base-url",
        "x-upstream-url",
        "x-target-url",
        "x-provider-url",
    }
)


# Dropped in each direction, whatever `Connection` lists besides.
_DROP_UPSTREAM = HOP_BY_HOP | _NOT_UPSTREAM
_DROP_DOWNSTREAM = HOP_BY_HOP | _NOT_DOWNSTREAM


def _connection_named(headers: Mapping[str, str]) -> AbstractSet[str]:
    """Header names listed in `Connection`, which are hop-by-hop for this message."""
    value = headers.get("connection")
    if not value:
        return _NONE
    return {token.strip().lower() for token in value.split(",") if token.strip()}


_NONE: frozenset[str] = frozenset()


def upstream_headers(
    client: CIMultiDictProxy[str],
    provider_headers: Mapping[str, str],
    defaults: Mapping[str, str],
) -> CIMultiDict[str]:
    """Client headers that may travel upstream, the provider's credentials set on top, and
    `defaults` (e.g. anthropic-version) where the client sent none."""
    dropped = _connection_named(client)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in client.items():
        lower = name.lower()
        if lower in _DROP_UPSTREAM or lower in dropped:
            continue
        if not lower.startswith(_NOT_UPSTREAM_PREFIXES):
            out.add(name, value)
    for name, value in provider_headers.items():
        out[name] = value
    for name, value in defaults.items():
        out.setdefault(name, value)
    return out


# The provider's id of the request (OpenAI's `x-request-id`), which its support asks for,
# reaches the client under this name: `x-request-id` is the gateway's own.
UPSTREAM_REQUEST_ID = "x-gateway-upstream-request-id"


def downstream_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Provider response headers that may reach the client."""
    dropped = _connection_named(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        lower = name.lower()
        if (
            lower not in _DROP_DOWNSTREAM
            and lower not in dropped
            and not lower.startswith(_NOT_DOWNSTREAM_PREFIX)
        ):
            out.add(name, value)
        elif lower == "x-request-id":
            out[UPSTREAM_REQUEST_ID] = value
    return out

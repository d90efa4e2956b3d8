"""The cache key: a hash of the canonical upstream request, partitioned by tenant."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson
from multidict import CIMultiDictProxy

from gateway.stages.body import reencode

# Bump when the key material changes shape, so old entries are never read under new rules.
KEY_VERSION = 1

# Top-level body fields that cannot change the answer. A deny-list, not an allow-list: any
# field not named here, including ones the gateway has never heard of, is part of the key.
DENY_FIELDS = frozenset(
    {
        "stream",  # transport only: a stored answer is replayed either way
        "stream_options",  # transport only: the usage chunk is replayed on request
        "user",  # end-user id for the provider's abuse monitoring
        "safety_identifier",  # the same, under its newer name
        "metadata",  # tags for the provider's dashboards (never echoed on cached endpoints)
        "prompt_cache_key",  # a routing hint for the provider's own prompt cache
    }
)

# Request headers that change what the provider answers (API version, beta features).
KEY_HEADERS = ("anthropic-version", "anthropic-beta", "openai-beta")

SHARED_PARTITION = "shared"
# Floats with an exact integer value are hashed as integers (1.0 and 1 mean the same to a
# provider); past 2**53 a float no longer names one integer, so it is left alone.
_EXACT_INT_LIMIT = 2**53
# orjson writes every float with an integer value below 1e16 as `<digits>.0` (above, with an
# exponent: `1e+16`, past 2**53, left alone anyway). Where that shape occurs nowhere (inside
# strings or not), no value needs normalising. `.0` is looked for first: the pattern's scan
# of every byte costs far more than the search for two bytes (and than the hash), on a long
# prompt most of the key's cost.
_WHOLE_FLOAT = re.compile(rb"[0-9]\.0(?![0-9])")


def partition(key_name: str, shared_across_keys: bool) -> str:
    """The tenant partition: one per gateway key, unless the route shares across keys.

    Key names cannot contain a dot, so `key.<name>` never equals the shared partition.
    """
    return SHARED_PARTITION if shared_across_keys else f"key.{key_name}"


def cache_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the upstream body that is hashed: everything but the deny-listed fields."""
    return {k: v for k, v in payload.items() if k not in DENY_FIELDS}


def canonical_json(value: Any) -> bytes:
    """JSON where key order, whitespace and 1.0-versus-1 make no difference. A body nested too
    deeply to be written is refused (see `reencode`)."""
    plain = reencode(value, orjson.OPT_SORT_KEYS)
    if b".0" not in plain or _WHOLE_FLOAT.search(plain) is None:
        return plain  # no float with an integer value: nothing to normalise
    return reencode(_normalise(value), orjson.OPT_SORT_KEYS)


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INT_LIMIT:
        return int(value)
    return value


def answer_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """The request headers that are part of the key, repeated values joined in order."""
    return {name: ",".join(headers.getall(name)) for name in KEY_HEADERS if name in headers}


def request_digest(
    *,
    payload: Mapping[str, Any],
    provider: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    partition: str,
    raw: bytes = b"",
) -> str:
    """sha256 over everything that decides the answer, and over who may see it.

    `headers` are the request's `answer_headers`; `payload` is the body sent upstream, after
    the route's model rewrite, and `raw` that body's bytes (see `_exact_integers`).
    """
    material = {
        "v": KEY_VERSION,
        "provider": provider,
        "path": path,
        "query": query,
        "headers": dict(headers),
        "partition": partition,
        "body": cache_body(payload),
    }
    hashed = canonical_json(material)
    return hashlib.sha256(hashed + _exact_integers(hashed, raw)).hexdigest()


def _exact_integers(hashed: bytes, raw: bytes) -> bytes:
    """The integers of 20 digits or more of the body sent, as written. JSON parsing reads an
    integer of 2^64 or more as a float, whose 17 significant digits would let two requests
    the provider tells apart share a key. Written again, such a float has an exponent: only
    then is the body searched (a search of every byte costs more than the hash)."""
    if b"e+" not in hashed:  # as orjson writes 1.8446744073709552e+19
        return b""
    found = _LONG_INTEGER.findall(raw)
    return b"\n" + b",".join(found) if found else b""


_LONG_INTEGER = re.compile(rb"[0-9]{20,}")

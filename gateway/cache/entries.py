"""One stored answer: its complete non-stream JSON body, usage and expiry, and its encoding."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, get_args

import orjson

from gateway.cache.policy import Kind
from gateway.context import Usage
from gateway.records import record

ENTRY_VERSION = 1
_KINDS = frozenset(get_args(Kind))
_USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Usage))


def now_ms() -> int:
    """Wall-clock milliseconds: expiry is compared across replicas, so not a monotonic clock."""
    return int(time.time() * 1000)


@record
class Entry:
    """A complete answer, stored in the form a non-streaming client receives it.

    Encoded as `<expires_at_ms>\\n<meta JSON>\\n<body>`: the expiry comes first so the lookup
    script can tell fresh from stale without decoding anything else.
    """

    kind: Kind
    body: bytes
    usage: Usage | None
    stored_at_ms: int
    expires_at_ms: int

    def is_fresh(self, at_ms: int) -> bool:
        return at_ms < self.expires_at_ms

    def encode(self) -> bytes:
        meta = {
            "v": ENTRY_VERSION,
            "kind": self.kind,
            "usage": self.usage,  # orjson writes a dataclass as its fields
            "stored": self.stored_at_ms,
        }
        return b"%d\n" % self.expires_at_ms + orjson.dumps(meta) + b"\n" + self.body

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        """None for anything this version did not write (an old format, a damaged value)."""
        try:
            expires, meta_json, body = raw.split(b"\n", 2)
            meta = orjson.loads(meta_json)
            if meta["v"] != ENTRY_VERSION or meta["kind"] not in _KINDS:
                return None
            return cls(
                kind=meta["kind"],
                body=body,
                usage=_usage(meta["usage"]),
                stored_at_ms=int(meta["stored"]),
                expires_at_ms=int(expires),
            )
        except (ValueError, KeyError, TypeError):
            return None


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    return Usage(**{name: int(raw[name]) for name in _USAGE_FIELDS})

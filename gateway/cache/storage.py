"""The cache's Redis side: key formats, Lua scripts, and failing open when Redis fails.

Every Redis error or slow answer is caught here and turned into "no entry" (reads) or
"not stored" (writes), counted in the stats, so a request never fails or hangs on the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import structlog
from redis.exceptions import RedisError

from gateway.cache.entries import Entry, now_ms
from gateway.cache.stats import CacheStats
from gateway.store import Store
from gateway.store.scripts import Script

KEY_PREFIX = "gw:cache:"
# Counting entries walks the keyspace (SCAN): an admin view may wait longer than a request.
COUNT_TIMEOUT_S = 5.0
# After a failure the cache leaves Redis alone this long, so a Redis that hangs costs one
# timeout per process per second rather than one per request.
COOL_OFF_S = 1.0

_SCRIPTS = ("lookup.lua", "store.lua", "release.lua")
T = TypeVar("T")
LockState = Literal["leader", "follower", "none"]
_log = structlog.get_logger("gateway.cache")


def entry_key(partition: str, digest: str) -> str:
    """The digest is the hash tag: an entry and its lock share a Redis Cluster slot, while
    entries spread over all slots."""
    return f"{KEY_PREFIX}{partition}:{{{digest}}}"


def lock_key(entry: str) -> str:
    return f"{entry}:lock"


class CacheUnavailable(Exception):
    """Redis failed or was too slow; the cache acts as if empty."""


@dataclass(frozen=True, slots=True)
class Scripts:
    lookup: Script
    store: Script
    release: Script

    @classmethod
    def load(cls) -> Scripts:
        return cls(*(Script.load(__package__, name) for name in _SCRIPTS))


@dataclass(slots=True)
class StoreHealth:
    """Whether the cache should try Redis now; shared by every request of one process."""

    down_until: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic)

    def usable(self) -> bool:
        return self.clock() >= self.down_until

    def failed(self) -> None:
        self.down_until = self.clock() + COOL_OFF_S


@dataclass(frozen=True, slots=True)
class Lookup:
    """What one read found: a fresh entry, else the lock state and any stale entry."""

    fresh: Entry | None = None
    stale: Entry | None = None
    lock: LockState = "none"


@dataclass(frozen=True, slots=True)
class CacheStore:
    """Cache reads and writes against one Redis client; never raises for Redis trouble."""

    redis: Store
    scripts: Scripts
    health: StoreHealth
    stats: CacheStats

    async def lookup(self, key: str, token: str = "", lock_ttl_s: float = 0.0) -> Lookup:
        """One round trip; with a `token`, try to become the key's leader."""
        args = (str(now_ms()), token, str(int(lock_ttl_s * 1000)))
        try:
            reply = await self._call(
                lambda: self.scripts.lookup.run(self.redis, (key, lock_key(key)), args)
            )
        except CacheUnavailable:
            return Lookup()
        status, raw = reply[0].decode(), reply[1]
        entry = Entry.decode(raw) if raw else None
        if status == "hit" and entry is not None:
            return Lookup(fresh=entry)
        lock: LockState = status if status in ("leader", "follower") else "none"
        return Lookup(stale=entry, lock=lock)

    async def put(self, key: str, entry: Entry, ttl_ms: int, token: str = "") -> bool:
        """Store for `ttl_ms` (the TTL plus any stale window) and release our lock."""
        args = (entry.encode(), str(ttl_ms), token)
        try:
            await self._call(lambda: self.scripts.store.run(self.redis, (key, lock_key(key)), args))
        except CacheUnavailable:
            return False
        return True

    async def release(self, key: str, token: str) -> None:
        with contextlib.suppress(CacheUnavailable):  # if it cannot be released, it expires
            await self._call(
                lambda: self.scripts.release.run(self.redis, (lock_key(key),), (token,))
            )

    async def count_entries(self, partition: str | None = None) -> int | None:
        """Entries kept (fresh, or expired within their stale window), all or one partition's;
        None when Redis fails. For admin views: never on a request's path."""
        pattern = f"{KEY_PREFIX}{partition}:*" if partition else f"{KEY_PREFIX}*"

        async def scan() -> int:
            keys = self.redis.scan_iter(match=pattern, count=1000)
            return sum([1 async for key in keys if not key.endswith(b":lock")])

        try:
            return await self._call(scan, COUNT_TIMEOUT_S)
        except CacheUnavailable:
            return None

    async def _call(
        self, operation: Callable[[], Awaitable[T]], timeout_s: float | None = None
    ) -> T:
        """`timeout_s` bounds an operation of many commands; every single command is bounded
        by the store client already (its command timeout, or the store guard's)."""
        if not self.health.usable():
            raise CacheUnavailable
        try:
            if timeout_s is None:
                return await operation()
            async with asyncio.timeout(timeout_s):
                return await operation()
        except (RedisError, OSError, TimeoutError) as exc:
            self.health.failed()
            self.stats.errors += 1
            _log.warning("cache_store_failed", error=type(exc).__name__)
            raise CacheUnavailable from None

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
from importlib import resources
from typing import Any, Literal, TypeVar

import structlog
from redis.asyncio import RedisCluster
from redis.exceptions import RedisError

from gateway.cache.entries import Entry, now_ms
from gateway.cache.stats import CacheStats
from gateway.records import record
from gateway.store import Store
from gateway.store.accounting import Rider, StoreUnavailable
from gateway.store.scripts import Script

KEY_PREFIX = "gw:cache:"
# Counting entries walks the keyspace (SCAN): an admin view may wait longer than a request.
COUNT_TIMEOUT_S = 5.0
# After a failure the cache leaves Redis alone this long, so a Redis that hangs costs one
# timeout per process per second rather than one per request.
COOL_OFF_S = 1.0

# The entry's read and lock as functions, then the two scripts that call them; the entry's
# write as a function, then the two scripts that call it.
_LOOKUPS = ("read.lua", "lookup.lua", "reserve_lookup.lua")
_WRITES = ("write.lua", "store.lua", "settle_store.lua")
T = TypeVar("T")
# What a write that rode in the settle may fail with when the store failed it.
_STORE_FAILURES = (StoreUnavailable, RedisError, OSError, TimeoutError)
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
    reserve_lookup: Script  # the accounting's reservation with a lookup added
    settle_store: Script  # the accounting's settle with a write added

    @classmethod
    def load(cls, reserve: Script, settle: Script) -> Scripts:
        """`reserve`, `settle`: the accounting's scripts, which `reserve_lookup` and
        `settle_store` call."""
        files = resources.files(__package__)
        read, lookup, reads = (files.joinpath(name).read_text("utf-8") for name in _LOOKUPS)
        write, store, writes = (files.joinpath(name).read_text("utf-8") for name in _WRITES)
        return cls(
            lookup=Script.of(f"{read}\n{lookup}"),
            store=Script.of(f"{write}\n{store}"),
            release=Script.load(__package__, "release.lua"),
            reserve_lookup=Script.of(_calling(read, "reserve", reserve, reads)),
            settle_store=Script.of(_calling(write, "settle", settle, writes)),
        )


def _calling(functions: str, name: str, script: Script, driver: str) -> str:
    """A script that defines `functions` and `script` as the function `name`, then runs
    `driver`, which calls them."""
    return f"{functions}\nlocal function {name}()\n{script.source}\nend\n{driver}"


@dataclass(slots=True)
class StoreHealth:
    """Whether the cache should try Redis now; shared by every request of one process."""

    down_until: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic)

    def usable(self) -> bool:
        return self.clock() >= self.down_until

    def failed(self) -> None:
        self.down_until = self.clock() + COOL_OFF_S


def _cluster(client: Store) -> bool:
    """Whether `client` is a Redis Cluster client, remembered per class: `isinstance`
    against RedisCluster goes through `typing.Protocol`'s check in Python (it is one), twice
    per request otherwise."""
    kind = type(client)
    known = _CLUSTER_CLASSES.get(kind)
    if known is None:
        known = _CLUSTER_CLASSES[kind] = issubclass(kind, RedisCluster)
    return known


_CLUSTER_CLASSES: dict[type, bool] = {}


@record
class Lookup:
    """What one read found: a fresh entry, else the lock state and any stale entry."""

    fresh: Entry | None = None
    stale: Entry | None = None
    lock: LockState = "none"


@record
class CacheStore:
    """Cache reads and writes against one Redis client; never raises for Redis trouble."""

    redis: Store
    scripts: Scripts
    health: StoreHealth
    stats: CacheStats

    async def lookup(self, key: str, token: str = "", lock_ttl_s: float = 0.0) -> Lookup:
        """One round trip; with a `token`, try to become the key's leader."""
        args = _lookup_args(token, lock_ttl_s)
        try:
            reply = await self._call(
                lambda: self.scripts.lookup.run(self.redis, (key, lock_key(key)), args)
            )
        except CacheUnavailable:
            return Lookup()
        return _found(reply)

    def rider(self, key: str, token: str, lock_ttl_s: float) -> Rider | None:
        """The same lookup, to ride in the request's reservation (`looked_up` reads its
        reply); None where it cannot: a Redis Cluster keeps the accounting and the entries in
        different slots, and a store resting after a failure is not asked."""
        if not self._rides():
            return None
        keys = (key, lock_key(key))
        return Rider(self.scripts.reserve_lookup, keys, _lookup_args(token, lock_ttl_s))

    async def looked_up(self, reply: Awaitable[list[Any] | None]) -> Lookup:
        """A rider's lookup, from its reply (None: the reservation refused the request, so
        nothing was read)."""
        try:
            found = await reply
        except StoreUnavailable as exc:
            self._failed(exc)
            return Lookup()
        return Lookup() if found is None else _found(found)

    async def put(self, key: str, entry: Entry, ttl_ms: int, token: str = "") -> bool:
        """Store for `ttl_ms` (the TTL plus any stale window) and release our lock."""
        args = _put_args(entry, ttl_ms, token)
        try:
            await self._call(lambda: self.scripts.store.run(self.redis, (key, lock_key(key)), args))
        except CacheUnavailable:
            return False
        return True

    def writer(self, key: str, entry: Entry, ttl_ms: int, token: str = "") -> Rider | None:
        """The same write, to ride in the request's settle (gateway.stages.gates.carry);
        None where it cannot: on a Redis Cluster (see `rider`), or a store resting after a
        failure, which is not asked."""
        if not self._rides():
            return None
        keys = (key, lock_key(key))
        return Rider(self.scripts.settle_store, keys, _put_args(entry, ttl_ms, token))

    def _rides(self) -> bool:
        """Whether a read or a write may ride in the accounting's command: not on a Redis
        Cluster (the accounting and the entries live in different slots), nor while the
        store rests after a failure."""
        return not _cluster(self.redis) and self.health.usable()

    def written(self, error: BaseException | None) -> bool:
        """A ridden write's outcome (`error`: why the settle that carried it failed, or was
        never sent); True when the entry was stored. A store failure rests the cache, as
        any other; anything else does not."""
        if error is None:
            return True
        if isinstance(error, _STORE_FAILURES):
            self._failed(error)
        return False

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
            self._failed(exc)
            raise CacheUnavailable from None

    def _failed(self, exc: BaseException) -> None:
        self.health.failed()
        self.stats.errors += 1
        _log.warning("cache_store_failed", error=type(exc).__name__)


def _lookup_args(token: str, lock_ttl_s: float) -> tuple[str, str, str]:
    return (str(now_ms()), token, str(int(lock_ttl_s * 1000)))


def _put_args(entry: Entry, ttl_ms: int, token: str) -> tuple[bytes, str, str]:
    return (entry.encode(), str(ttl_ms), token)


def _found(reply: list[Any]) -> Lookup:
    """lookup.lua's reply: ['hit', entry] or [lock state, expired entry or '']."""
    status, raw = reply[0].decode(), reply[1]
    entry = Entry.decode(raw) if raw else None
    if status == "hit" and entry is not None:
        return Lookup(fresh=entry)
    lock: LockState = status if status in ("leader", "follower") else "none"
    return Lookup(stale=entry, lock=lock)

"""The cache's per-app state (counters, flights, scripts, Redis health) and its app key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from gateway.cache.entries import Entry
from gateway.cache.singleflight import Flights
from gateway.cache.stats import CacheStats, CacheStatsSnapshot
from gateway.cache.storage import CacheStore, Scripts, StoreHealth
from gateway.routes import STORE
from gateway.store.accounting import ACCOUNTING


@dataclass(slots=True)
class CacheState:
    scripts: Scripts
    stats: CacheStats = field(default_factory=CacheStats)
    flights: Flights = field(default_factory=Flights)
    health: StoreHealth = field(default_factory=StoreHealth)
    # This process's answers on their way to the store (written once each answer is sent),
    # served from here meanwhile: a request right behind its twin is a hit, not a miss.
    writing: dict[str, Entry] = field(default_factory=dict)

    def store(self, app: web.Application) -> CacheStore:
        """A store over the app's current Redis client."""
        return CacheStore(app[STORE], self.scripts, self.health, self.stats)


CACHE_STATE = web.AppKey("cache_state", CacheState)


async def cache_state(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the cache's state lives as long as the app (scripts read at start-up)."""
    accounting = app[ACCOUNTING]
    app[CACHE_STATE] = CacheState(Scripts.load(accounting.reserve_script, accounting.settle_script))
    yield


def cache_stats(app: web.Application) -> CacheStatsSnapshot:
    """The cache counters of this process, for metrics and the admin view."""
    return app[CACHE_STATE].stats.snapshot()


async def cache_entry_count(app: web.Application, partition: str | None = None) -> int | None:
    """Entries in the shared store (every replica's), all or one partition's (`key.<name>`
    or `shared`); None when the store fails. Walks the keyspace: for admin views only."""
    state = app[CACHE_STATE]
    return await state.store(app).count_entries(partition)

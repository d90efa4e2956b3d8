"""Whether the cache's reads and writes may ride in the accounting's commands depends on the
store client's kind: never on a Redis Cluster, whose slots keep them apart."""

from __future__ import annotations

from fakeredis import FakeAsyncRedis
from redis.asyncio import Redis, RedisCluster

from gateway.cache.entries import Entry
from gateway.cache.stats import CacheStats
from gateway.cache.storage import CacheStore, Scripts, StoreHealth
from gateway.store import Store
from gateway.store.scripts import Script

ENTRY = Entry(kind="chat", body=b"{}", usage=None, stored_at_ms=1, expires_at_ms=2)


class _ClusterClient(RedisCluster):
    """A cluster client with no cluster behind it: only its kind matters here."""

    def __init__(self) -> None:  # no nodes to reach
        pass


def _store(client: Store) -> CacheStore:
    scripts = Scripts.load(Script.of("return 1"), Script.of("return 1"))
    return CacheStore(client, scripts, StoreHealth(), CacheStats())


def test_a_single_redis_or_the_embedded_store_lets_the_cache_ride() -> None:
    for client in (Redis(), FakeAsyncRedis(), Redis()):  # the second Redis: its kind known
        store = _store(client)
        assert store.rider("k", "", 1.0) is not None
        assert store.writer("k", ENTRY, 1000) is not None


def test_a_redis_cluster_keeps_the_cache_on_its_own_commands() -> None:
    for _ in range(2):  # the second time, its kind known
        store = _store(_ClusterClient())
        assert store.rider("k", "", 1.0) is None
        assert store.writer("k", ENTRY, 1000) is None

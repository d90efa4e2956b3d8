"""The shared store: Redis, a Redis Cluster, or the embedded `memory://` store (same commands)."""

from __future__ import annotations

from redis.asyncio import Redis, RedisCluster

from gateway.store.coalesce import coalesce

# A request never waits long on the store: these bound every command.
COMMAND_TIMEOUT_S = 0.5
CONNECT_TIMEOUT_S = 0.5

Store = Redis | RedisCluster

CLUSTER_SCHEMES = ("redis-cluster://", "rediss-cluster://")


def open_store(url: str) -> Store:
    """`memory://`: in-process (fakeredis, Lua included), one process only.
    `redis://`, `rediss://`: one Redis. `redis-cluster://host:port`: a Redis Cluster."""
    if url.startswith("memory://"):
        from fakeredis import FakeAsyncRedis  # lazily: only the embedded store needs it

        store: Redis = FakeAsyncRedis()
        return store
    if url.startswith(CLUSTER_SCHEMES):
        plain = url.replace("-cluster://", "://", 1)
        return RedisCluster.from_url(
            plain, socket_timeout=COMMAND_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S
        )
    # Concurrent requests share round trips (see coalesce), each bounded by the command
    # timeout; a cluster client routes each command to its own node, so it is left as it is.
    return coalesce(
        Redis.from_url(url, socket_timeout=None, socket_connect_timeout=CONNECT_TIMEOUT_S),
        COMMAND_TIMEOUT_S,
    )

"""The shared store: Redis, or the embedded `memory://` store speaking the same commands."""

from __future__ import annotations

from redis.asyncio import Redis

# A request never waits long on the store: these bound every command.
COMMAND_TIMEOUT_S = 0.5
CONNECT_TIMEOUT_S = 0.5


def open_store(url: str) -> Redis:
    """`memory://` gives an in-process store (fakeredis, Lua included) for one process."""
    if url.startswith("memory://"):
        from fakeredis import FakeAsyncRedis  # imported lazily: only the embedded store needs it

        store: Redis = FakeAsyncRedis()
        return store
    return Redis.from_url(
        url,
        socket_timeout=COMMAND_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )

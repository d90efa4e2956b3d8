"""A circuit breaker around the store client, so that no request waits on a dead or frozen Redis.

Every command the gateway sends (scripts included) goes through the client's
`execute_command`; the guard wraps that one method on the client it is given, so the callers
and their error handling stay as they are. While the breaker is open a command fails at once
with `StoreCircuitOpen`, a `redis.exceptions.ConnectionError`: every caller already treats that
as "store unavailable" (cache: a miss; budgets: the outage policy; request log: dropped and
counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from redis.asyncio import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from gateway.store import COMMAND_TIMEOUT_S, Store
from gateway.store.coalesce import coalescer_of

# One command, however the client retries inside, never takes longer than this (a coalesced
# client's round trips are bounded by the command timeout already).
HARD_TIMEOUT_S = COMMAND_TIMEOUT_S * 2

_log = structlog.get_logger("gateway.store")


class StoreCircuitOpen(RedisConnectionError):
    """The breaker is open: the store is not asked."""


@dataclass(slots=True)
class StoreBreaker:
    """Closed → open after `failures` consecutive failures → one probe after `open_s`."""

    failures: int = 3
    open_s: float = 5.0
    clock: Callable[[], float] = field(default=time.monotonic)
    consecutive: int = 0
    open_until: float = 0.0
    probing: bool = False
    last_error: str = ""
    # Called with the new state ("open", "closed") on every change.
    on_change: Callable[[str], None] | None = None

    @property
    def state(self) -> str:
        if self.consecutive < self.failures:
            return "closed"
        return "half_open" if self.clock() >= self.open_until else "open"

    def retry_in_s(self) -> float:
        return max(0.0, self.open_until - self.clock())

    def allow(self) -> bool:
        """Whether to send a command now: always when closed; one probe at a time after the
        open period; never while open."""
        if self.consecutive < self.failures:  # closed: every command
            return True
        state = self.state
        if state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def succeeded(self) -> None:
        if not self.consecutive:  # nothing counted (and no probe: probes follow failures)
            return
        was_open = self.consecutive >= self.failures
        self.consecutive, self.probing = 0, False
        if was_open:
            _log.info("store_circuit_closed")
            self._changed("closed")

    def failed(self, error: str) -> None:
        self.last_error = error
        self.probing = False
        self.consecutive += 1
        if self.consecutive >= self.failures:
            opening = self.clock() >= self.open_until
            self.open_until = self.clock() + self.open_s
            if opening:
                _log.warning(
                    "store_circuit_open",
                    failures=self.consecutive,
                    error=error,
                    retry_in_s=self.open_s,
                )
                self._changed("open")

    def released(self) -> None:
        """A probe that ended without a verdict (its caller was cancelled early)."""
        self.probing = False

    def _changed(self, state: str) -> None:
        if self.on_change is not None:
            self.on_change(state)


STORE_BREAKER = web.AppKey("store_breaker", StoreBreaker)


def guard_store(store: Store, breaker: StoreBreaker, *, limit_retries: bool = True) -> Store:
    """Wrap `store` in place and return it. `limit_retries` (a real Redis): at most one
    immediate retry, of a broken connection only; redis-py's default (ten retries with
    backoff) would hold a request for seconds on a store that is down."""
    if limit_retries:
        store.set_retry(Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
    send: Callable[..., Awaitable[Any]] = store.execute_command
    # The store is judged by its replies, never by how long a caller waited: a caller that
    # gave up is no verdict (the gateway's own loop may have been held up while the reply
    # came in). A coalesced client bounds every round trip itself (a second timer per command
    # would only cost time), and tells the breaker of a failure no caller was left to see.
    # Any other client (a Redis Cluster's, the embedded store) cancels the command with its
    # caller, so the store is asked instead: one PING, whose answer or failure is the verdict.
    coalescer = coalescer_of(store)
    timed = coalescer is None
    if coalescer is not None:
        coalescer.on_unheard = breaker.failed
    asking: asyncio.Task[None] | None = None
    # Every primary of a cluster: a stuck one holds up the commands for its slots.
    everywhere = {"target_nodes": RedisCluster.PRIMARIES} if isinstance(store, RedisCluster) else {}

    async def ask_the_store() -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):  # told to the breaker
            await guarded("PING", **everywhere)

    async def guarded(*args: Any, **options: Any) -> Any:
        if not breaker.allow():
            raise StoreCircuitOpen(
                f"store circuit open ({breaker.last_error}); retry in {breaker.retry_in_s():.1f}s"
            )
        try:
            if timed:
                async with asyncio.timeout(HARD_TIMEOUT_S):
                    result = await send(*args, **options)
            else:
                result = await send(*args, **options)
        except ResponseError:
            breaker.succeeded()  # the store answered; the command itself was refused
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            breaker.failed(type(exc).__name__)
            raise
        except asyncio.CancelledError:
            breaker.released()
            nonlocal asking
            if timed and (asking is None or asking.done()):  # one PING at a time
                asking = asyncio.get_running_loop().create_task(ask_the_store())
            raise
        breaker.succeeded()
        return result

    # Every command, scripts included, goes through this one method of the client.
    guarded.__wrapped__ = send  # type: ignore[attr-defined]
    store.execute_command = guarded  # type: ignore[method-assign]
    close = store.aclose

    async def aclose(*args: Any, **kwargs: Any) -> None:
        """Close the client with no PING of the guard's left to outlive it."""
        if asking is not None and not asking.done():
            asking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asking
        await close(*args, **kwargs)

    store.aclose = aclose  # type: ignore[method-assign]
    return store

"""Budget, rate-limit and statistics state in the store: its key formats and atomic scripts.

Every key here carries one hash tag, so that one script can check every budget a request is
subject to (key, route, key-on-route) atomically, on a Redis Cluster too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from gateway.store import Store
from gateway.store.scripts import Script

PREFIX = "llmgw:{acct}:"
_KEYS = (PREFIX,)  # every script gets the prefix as its one key (the slot of them all)
_LUA = "gateway.store"


class StoreUnavailable(Exception):
    """The store did not answer (down, slow, or refusing)."""


@dataclass(frozen=True, slots=True)
class Scope:
    """One budget a request is subject to. Limits in micro-dollars / tokens; None = no limit."""

    name: str  # k:<key>, r:<route>, kr:<key>:<route>
    label: str  # for people: "key 'team-a'"
    day_micro: int | None
    month_micro: int | None
    month_tokens: int | None


@dataclass(frozen=True, slots=True)
class StatFields:
    """Statistics counters: each value is added under every prefix (`<prefix>:<name>`).
    The script gets each number once rather than once per prefix: fewer arguments to send."""

    prefixes: tuple[str, ...]
    values: dict[str, int]


@dataclass(frozen=True, slots=True)
class Reserved:
    remaining_micro: int | None  # least budget left across scopes, this reservation held
    remaining_requests: int | None
    day: str  # UTC period ids from the store's clock: YYYYMMDD, YYYYMM
    month: str


@dataclass(frozen=True, slots=True)
class RateLimited:
    which: str  # rpm | tpm
    retry_after_ms: int
    never: bool  # the request alone exceeds the per-minute limit


@dataclass(frozen=True, slots=True)
class BudgetExhausted:
    scope: str
    period: str  # day | month | tokens
    used: int
    limit: int
    day: str
    month: str


@dataclass(frozen=True, slots=True)
class Crossing:
    scope: str
    period: str
    percent: int
    spent_micro: int
    limit_micro: int


@contextmanager
def _boundary() -> Iterator[None]:
    """The one place store errors are caught and turned into StoreUnavailable."""
    try:
        yield
    except _STORE_ERRORS as exc:
        raise _unavailable(exc) from None


_STORE_ERRORS = (TimeoutError, RedisError, OSError)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"{type(exc).__name__}: {exc}")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class Accounting:
    """The store boundary for money and limits: Redis errors become StoreUnavailable."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._reserve = Script.load(_LUA, "lua/reserve.lua")
        self._settle = Script.load(_LUA, "lua/settle.lua")
        self._sweep = Script.load(_LUA, "lua/sweep.lua")

    async def _run(self, script: Script, args: Sequence[Any]) -> Any:
        try:  # as _boundary does, without a context manager on every request's path
            return await script.run(self._store, _KEYS, args)
        except _STORE_ERRORS as exc:
            raise _unavailable(exc) from None

    async def reserve(
        self,
        request_id: str,
        amount_micro: int,
        tokens: int,
        ttl_ms: int,
        rpm: int,
        tpm: int,
        rate_key: str,
        scopes: Sequence[Scope],
    ) -> Reserved | RateLimited | BudgetExhausted:
        args: list[Any] = [request_id, amount_micro, tokens, ttl_ms, rpm, tpm, rate_key]
        args.append(len(scopes))
        for s in scopes:
            args += [s.name, _limit(s.day_micro), _limit(s.month_micro), _limit(s.month_tokens)]
        out = await self._run(self._reserve, args)
        kind = int(out[0])
        if kind == 2:
            return RateLimited(_s(out[1]), int(out[2]), bool(int(out[3])))
        if kind == 3:
            return BudgetExhausted(
                _s(out[1]), _s(out[2]), int(_s(out[3])), int(_s(out[4])), _s(out[5]), _s(out[6])
            )
        remaining, requests = int(_s(out[1])), int(out[2])
        return Reserved(
            remaining_micro=None if remaining < 0 else remaining,
            remaining_requests=None if requests < 0 else requests,
            day=_s(out[3]),
            month=_s(out[4]),
        )

    async def settle(
        self,
        request_id: str,
        actual: tuple[int, int],
        reserved: tuple[int, int],
        period: tuple[str, str],
        tpm: int,
        rate_key: str,
        scopes: Sequence[Scope],
        stats: StatFields,
    ) -> list[Crossing]:
        """Charge `actual` (micro-dollars, tokens) and release `reserved`; returns the budget
        thresholds this request crossed (each reported by exactly one request)."""
        args: list[Any] = [request_id, *actual, *reserved, *period, tpm, rate_key, len(scopes)]
        for s in scopes:
            args += [s.name, _limit(s.day_micro), _limit(s.month_micro)]
        args += [len(stats.prefixes), *stats.prefixes, len(stats.values)]
        for name, value in stats.values.items():
            args += [name, value]
        out = await self._run(self._settle, args)
        return [
            Crossing(
                _s(out[i]),
                _s(out[i + 1]),
                int(out[i + 2]),
                int(_s(out[i + 3])),
                int(_s(out[i + 4])),
            )
            for i in range(0, len(out), 5)
        ]

    async def sweep(self) -> int:
        """Charge reservations whose process never settled them; returns how many."""
        return int(await self._run(self._sweep, []))

    async def read(self, names: Sequence[str]) -> list[int]:
        """Integer counters by name (relative to the prefix); 0 when absent."""
        with _boundary():
            values = await self._store.mget([PREFIX + n for n in names]) if names else []
        return [int(v) if v is not None else 0 for v in values]

    async def stats(self, month: str) -> dict[str, int]:
        with _boundary():
            raw = await self._store.hgetall(PREFIX + "stats:" + month)
        return {_s(k): int(v) for k, v in raw.items()}

    async def open_reservations(self) -> int:
        with _boundary():
            return int(await self._store.hlen(PREFIX + "resv"))


ACCOUNTING = web.AppKey("accounting", Accounting)


def spent_key(scope: str, period: str) -> str:
    """`period` is d<YYYYMMDD> or m<YYYYMM>."""
    return f"spent:{scope}:{period}"


def held_key(scope: str, period: str) -> str:
    return f"held:{scope}:{period}"


def tokens_key(scope: str, month: str) -> str:
    return f"tokens:{scope}:m{month}"

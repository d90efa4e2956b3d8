"""Budget, rate-limit and statistics state in the store: its key formats and atomic scripts.

Every key here carries one hash tag, so that one script can check every budget a request is
subject to (key, route, key-on-route) atomically, on a Redis Cluster too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from gateway.pricing import usd
from gateway.records import record
from gateway.store import Store
from gateway.store.coalesce import BACKGROUND, coalesced
from gateway.store.scripts import Script

PREFIX = "llmgw:{acct}:"
STATS_FLUSH_S = 1.0  # statistics reach the store at most this late
_KEYS = (PREFIX,)  # every script gets the prefix as its one key (the slot of them all)
_LUA = "gateway.store"
# The settle of spend served while the store was out: no request's id (those are hex), so
# it releases no reservation.
_OWED_ID = "outage"

_log = structlog.get_logger("gateway.accounting")


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
    # The reservation script's arguments for it (-1: no limit), built once.
    limits: tuple[str, int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        day, month, tokens = self.day_micro, self.month_micro, self.month_tokens
        limits = (self.name, _limit(day), _limit(month), _limit(tokens))
        object.__setattr__(self, "limits", limits)


@record
class StatFields:
    """Statistics counters: each value is added under every prefix (`<prefix>:<name>`)."""

    prefixes: tuple[str, ...]
    values: dict[str, int]


@record
class Rider:
    """A read that rides in the reservation's own command, or a write in the settle's (one
    script, one round trip): `script` is the reservation's with the read added
    (gateway/cache/reserve_lookup.lua), or the settle's with the write added
    (gateway/cache/settle_store.lua); its keys follow the accounting prefix and its
    arguments the reservation's or the settle's. What a read returns comes back as
    `Reserved.read`; a refused request reads nothing."""

    script: Script
    keys: tuple[str, ...]
    args: tuple[str | bytes, ...]


@record
class Reserved:
    remaining_micro: int | None  # least budget left across scopes, this reservation held
    remaining_requests: int | None
    day: str  # UTC period ids from the store's clock: YYYYMMDD, YYYYMM
    month: str
    held: bool  # False: checked and counted, nothing held (nothing to settle)
    read: list[Any] | None = None  # the rider's reply


@record
class RateLimited:
    which: str  # rpm | tpm
    retry_after_ms: int
    never: bool  # the request alone exceeds the per-minute limit


@record
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
    period: str  # day | month (in micro-dollars) | tokens (this month's, in tokens)
    percent: int
    spent: int
    limit: int


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


def reservation_reply(out: Any, read: bool) -> Reserved | RateLimited | BudgetExhausted:
    """The reservation script's reply (`read`: with a rider's read after it)."""
    kind = int(out[0])
    if kind == 2:
        return RateLimited(_s(out[1]), int(out[2]), bool(int(out[3])))
    if kind == 3:
        return BudgetExhausted(
            _s(out[1]), _s(out[2]), int(_s(out[3])), int(_s(out[4])), _s(out[5]), _s(out[6])
        )
    remaining, requests = int(out[1]), int(out[2])  # int() reads bytes as well as str
    return Reserved(
        remaining_micro=None if remaining < 0 else remaining,
        remaining_requests=None if requests < 0 else requests,
        day=_s(out[3]),
        month=_s(out[4]),
        held=int(out[5]) == 1,
        read=out[6:] if read else None,
    )


class Accounting:
    """The store boundary for money and limits: Redis errors become StoreUnavailable."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._answers_orphans = coalesced(store)
        self._reserve = Script.load(_LUA, "lua/reserve.lua")
        self._settle = Script.load(_LUA, "lua/settle.lua")
        self._sweep = Script.load(_LUA, "lua/sweep.lua")
        self._stats_add = Script.load(_LUA, "lua/stats_add.lua")
        # Statistics not yet in the store: (month, prefixes, name) -> sum of increments.
        self._counts: dict[tuple[str, tuple[str, ...], str], int] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        # Per key, what it may have spent unchecked while the store was out (the outage
        # allowance in use): a request's worst case while it runs, its cost once settled,
        # until that cost is charged to its budgets.
        self.unchecked: dict[str, int] = {}
        # Spend served unchecked, not yet charged: (key, scopes, day, month) -> [micro, tokens].
        self._owed: dict[tuple[str, tuple[Scope, ...], str, str], list[int]] = {}
        # Told of the budget thresholds a late charge crossed: (key name, scopes, crossings).
        self.on_late_crossings: Callable[[str, Sequence[Scope], list[Crossing]], None] | None = None

    @property
    def answers_orphans(self) -> bool:
        """Whether a reservation whose caller is cancelled while it waits still has its reply
        handed over (see ON_ORPHAN in gateway.store.coalesce): a coalesced Redis client."""
        return self._answers_orphans

    @property
    def reserve_script(self) -> Script:
        """For a rider's script, which is this one with a read added."""
        return self._reserve

    @property
    def settle_script(self) -> Script:
        """For a rider's script, which is this one with a write added."""
        return self._settle

    async def _run(self, script: Script, args: Sequence[Any], keys: Sequence[str] = _KEYS) -> Any:
        try:  # as _boundary does, without a context manager on every request's path
            return await script.run(self._store, keys, args)
        except _STORE_ERRORS as exc:
            raise _unavailable(exc) from None

    async def _run_with(self, script: Script, args: list[Any], rider: Rider | None) -> Any:
        """`script`, or the rider's script in its place with the rider's keys and arguments
        after its own."""
        if rider is None:
            return await self._run(script, args)
        return await self._run(rider.script, [*args, *rider.args], (PREFIX, *rider.keys))

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
        hold: bool = True,
        rider: Rider | None = None,
    ) -> Reserved | RateLimited | BudgetExhausted:
        """`hold=False`: for a request served without the provider (see reserve.lua)."""
        args: list[Any] = [request_id, amount_micro, tokens, ttl_ms, rpm, tpm, rate_key]
        args += ["1" if hold else "0", len(scopes)]
        for s in scopes:
            args += s.limits
        out = await self._run_with(self._reserve, args, rider)
        return reservation_reply(out, rider is not None)

    async def settle(
        self,
        request_id: str,
        actual: tuple[int, int],
        reserved: tuple[int, int],
        period: tuple[str, str],
        tpm: int,
        rate_key: str,
        scopes: Sequence[Scope],
        rider: Rider | None = None,
    ) -> list[Crossing]:
        """Charge `actual` (micro-dollars, tokens) and release `reserved`; returns the budget
        thresholds this request crossed (each reported by exactly one request). A `rider`
        (gateway/cache/settle_store.lua) writes in the same command; what it wrote was
        written if this returns."""
        args: list[Any] = [request_id, *actual, *reserved, *period, tpm, rate_key, len(scopes)]
        for s in scopes:
            args += s.limits
        out = await self._run_with(self._settle, args, rider)
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

    def admit_unchecked(self, key: str, amount_micro: int, allowance_micro: int) -> bool:
        """Whether `key` may spend `amount_micro` more unchecked, the store being out: within
        its allowance, counting what it spent unchecked that the store has not taken yet."""
        spent = self.unchecked.get(key, 0) + amount_micro
        if spent > allowance_micro:
            return False
        self.unchecked[key] = spent
        return True

    def owe(
        self,
        key: str,
        scopes: tuple[Scope, ...],
        period: tuple[str, str],
        actual: tuple[int, int],
        admitted_micro: int,
    ) -> None:
        """A request served unchecked has settled at `actual` (micro-dollars, tokens), having
        been let through for `admitted_micro`: its cost is charged to its budgets with the
        statistics, once the store takes it, and until then holds that much allowance."""
        self.unchecked[key] = self.unchecked.get(key, 0) + actual[0] - admitted_micro
        if actual[0] or actual[1]:
            owed = self._owed.setdefault((key, scopes, *period), [0, 0])
            owed[0] += actual[0]
            owed[1] += actual[1]
        self._arm_flush()

    async def _charge_owed(self) -> None:
        """Charge what was spent unchecked (a settle with nothing held); on a failure, the
        rest stays owed for the next flush. Each sum is taken out while its charge is on its
        way: what requests owe meanwhile is a new sum, not lost with this one."""
        while self._owed:
            entry = next(iter(self._owed))
            micro, tokens = self._owed.pop(entry)
            key, scopes, day, month = entry
            try:
                crossings = await self.settle(
                    _OWED_ID, (micro, tokens), (0, 0), (day, month), 0, key, scopes
                )
            except BaseException:
                owed = self._owed.setdefault(entry, [0, 0])
                owed[0] += micro
                owed[1] += tokens
                raise
            left = self.unchecked.get(key, 0) - micro
            if left > 0:
                self.unchecked[key] = left
            else:
                self.unchecked.pop(key, None)
            _log.info("outage_spend_charged", key=key, cost_usd=usd(micro), tokens=tokens)
            if crossings and self.on_late_crossings is not None:
                self.on_late_crossings(key, scopes, crossings)

    def report_unsent(self) -> None:
        """At shutdown: every spend the store never took, logged with its cost."""
        for (key, _, day, _), (micro, tokens) in self._owed.items():
            _log.error("spend_not_stored", key=key, day=day, cost_usd=usd(micro), tokens=tokens)
        self._owed.clear()

    async def sweep(self) -> int:
        """Charge reservations whose process never settled them; returns how many."""
        return int(await self._run(self._sweep, []))

    async def read(self, names: Sequence[str]) -> list[int]:
        """Integer counters by name (relative to the prefix); 0 when absent."""
        with _boundary():
            values = await self._store.mget([PREFIX + n for n in names]) if names else []
        return [int(v) if v is not None else 0 for v in values]

    def count(self, month: str, stats: StatFields) -> None:
        """Add one request's statistics. They are summed here and reach the store within
        STATS_FLUSH_S, in one command for every request of that time: in each settle they
        were about 24 HINCRBY, which under load held up every reply batched after them. A
        process that dies loses at most that much statistics; money is not counted here."""
        counts = self._counts
        for name, value in stats.values.items():
            key = (month, stats.prefixes, name)
            counts[key] = counts.get(key, 0) + value
        self._arm_flush()

    def _arm_flush(self) -> None:
        if self._flush_timer is None and (self._counts or self._owed):
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(STATS_FLUSH_S, self._flush_later)

    def _flush_later(self) -> None:
        self._flush_timer = None
        task = asyncio.get_running_loop().create_task(self._flush_in_background())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush_in_background(self) -> None:
        BACKGROUND.set(True)  # nobody waits on it: it rides with the next batch
        await self.flush_stats()

    async def flush_stats(self) -> None:
        """Send the statistics summed so far, and charge the spend served unchecked; each
        kept for the next try if the store is out."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        try:
            await self._charge_owed()
        except StoreUnavailable:
            self._arm_flush()
        counts, self._counts = self._counts, {}
        by_month: dict[str, dict[str, int]] = {}
        for (month, prefixes, name), value in counts.items():
            fields = by_month.setdefault(month, {})
            for prefix in prefixes:
                field = f"{prefix}:{name}"
                fields[field] = fields.get(field, 0) + value
        sent: set[str] = set()
        for month, fields in by_month.items():
            try:
                await self._run(self._stats_add, [month, *chain.from_iterable(fields.items())])
            except StoreUnavailable:
                self._keep([(key, value) for key, value in counts.items() if key[0] not in sent])
                return
            sent.add(month)

    def _keep(self, unsent: list[tuple[tuple[str, tuple[str, ...], str], int]]) -> None:
        """Put back what could not be sent (bounded: names come from the config)."""
        for key, value in unsent:
            self._counts[key] = self._counts.get(key, 0) + value
        self._arm_flush()

    async def stats(self, month: str) -> dict[str, int]:
        """The month's statistics, this process's latest included."""
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        await self.flush_stats()
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

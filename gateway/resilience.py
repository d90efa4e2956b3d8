"""Process-wide resilience state: circuits, retry budgets, and counters the metrics module reads."""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.circuit import CircuitRegistry, CircuitSnapshot
from gateway.retry import RetryBudgets

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ResilienceSnapshot:
    """A copy of the counters at one moment; labels are names from config and fixed words.

    Attempt outcomes and retry reasons: `ok`, `http_<status>`, `connect_error`, `timeout`,
    `redirect`, `cancelled` (a hedge's loser, or the client left), `invalid_json` (retries).
    """

    attempts: dict[tuple[str, str], int]  # (provider, outcome)
    retries: dict[tuple[str, str], int]  # (provider, reason)
    retry_budget_exhausted: dict[str, int]  # provider
    fallbacks: dict[tuple[str, str], int]  # (route, provider fallen back to)
    targets_skipped: dict[tuple[str, str, str], int]  # (route, provider, dialect|circuit_open)
    hedges: dict[tuple[str, str], int]  # (route, started|won|lost)
    stream_interruptions: dict[str, int]  # provider
    stale_served: dict[str, int]  # route
    circuits: tuple[CircuitSnapshot, ...]


@dataclass(slots=True)
class ResilienceStats:
    """Counters only; incrementing one is a dict update on the event loop, no locking."""

    attempts: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    retries: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    retry_budget_exhausted: collections.Counter[str] = field(default_factory=collections.Counter)
    fallbacks: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    targets_skipped: collections.Counter[tuple[str, str, str]] = field(
        default_factory=collections.Counter
    )
    hedges: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    stream_interruptions: collections.Counter[str] = field(default_factory=collections.Counter)
    stale_served: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass(slots=True)
class Resilience:
    """What every request of one app shares. `sleep`, `rng` and `wall_clock` are seams for
    tests; circuits take their own clock (see CircuitRegistry)."""

    circuits: CircuitRegistry = field(default_factory=CircuitRegistry)
    budgets: RetryBudgets = field(default_factory=RetryBudgets)
    stats: ResilienceStats = field(default_factory=ResilienceStats)
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    wall_clock: Callable[[], float] = time.time  # reads HTTP-date Retry-After values

    def snapshot(self) -> ResilienceSnapshot:
        stats = self.stats
        return ResilienceSnapshot(
            attempts=dict(stats.attempts),
            retries=dict(stats.retries),
            retry_budget_exhausted=dict(stats.retry_budget_exhausted),
            fallbacks=dict(stats.fallbacks),
            targets_skipped=dict(stats.targets_skipped),
            hedges=dict(stats.hedges),
            stream_interruptions=dict(stats.stream_interruptions),
            stale_served=dict(stats.stale_served),
            circuits=tuple(self.circuits.snapshot()),
        )


RESILIENCE = web.AppKey("resilience", Resilience)


def readiness_detail(res: Resilience) -> dict[str, Any]:
    """The circuits for `/readyz`, keyed `provider/model`; empty until a target was used."""
    circuits = {
        (f"{c.provider}/{c.model}" if c.model else c.provider): {
            "state": c.state.value,
            "consecutive_failures": c.consecutive_failures,
            "window_requests": c.window_requests,
            "window_failures": c.window_failures,
            "retry_in_s": None if c.retry_in_s is None else round(c.retry_in_s, 3),
        }
        for c in res.circuits.snapshot()
    }
    return {"circuits": circuits} if circuits else {}

"""Brings state kept elsewhere into the metrics: resilience and cache counters, store budgets.

In-process counters (attempts, retries, fallbacks, circuits; cache stores and errors) are
copied as deltas into real metric families, so that in multiprocess mode each worker writes
its own share and the scrape sums them. Budgets and month-to-date spend are read from the
store, which every replica shares, so every replica reports the same values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from gateway.accounting import local_periods
from gateway.cache.state import CACHE_STATE, cache_stats
from gateway.cache.stats import CacheStatsSnapshot
from gateway.metrics import CIRCUIT_STATES, METRICS, OTHER, Metrics, budget_limits, word
from gateway.pricing import MICRO
from gateway.resilience import RESILIENCE
from gateway.routes import RUNTIME
from gateway.store.accounting import ACCOUNTING, StoreUnavailable, spent_key

STORE_READ_TIMEOUT_S = 0.5


class SnapshotExporter:
    """Turns cumulative in-process counters into increments of metric families."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._seen: dict[tuple[str, Hashable], float] = {}

    def _add(
        self,
        family: Counter,
        name: str,
        counts: Mapping[Any, int],
        labels: Callable[[Any], tuple[str, ...]],
    ) -> None:
        for raw, value in counts.items():
            last = self._seen.get((name, raw), 0)
            if value > last:
                family.labels(*labels(raw)).inc(value - last)
            self._seen[(name, raw)] = value

    def sync(self, app: web.Application) -> None:
        self._m.fold()  # what requests recorded
        resilience = app.get(RESILIENCE)
        if resilience is not None:
            self._resilience(resilience.snapshot())
        if CACHE_STATE in app:
            self._cache(cache_stats(app))

    def _resilience(self, snap: Any) -> None:
        m = self._m

        def pw(raw: tuple[str, str]) -> tuple[str, str]:
            return m.provider(raw[0]), word(raw[1])

        def rp(raw: tuple[str, str]) -> tuple[str, str]:
            return m.route(raw[0]), m.provider(raw[1])

        self._add(m.attempts, "attempts", snap.attempts, pw)
        self._add(m.retries, "retries", snap.retries, pw)
        self._add(m.retry_budget_exhausted, "rbe", snap.retry_budget_exhausted, _one(m.provider))
        self._add(m.fallbacks, "fallbacks", snap.fallbacks, rp)
        self._add(m.hedges, "hedges", snap.hedges, lambda raw: (m.route(raw[0]), word(raw[1])))
        self._add(
            m.stream_interruptions, "interrupted", snap.stream_interruptions, _one(m.provider)
        )
        states: dict[tuple[str, str], int] = {}
        for circuit in snap.circuits:
            labels = (m.provider(circuit.provider), m.model(circuit.model))
            value = CIRCUIT_STATES.get(circuit.state.value, 0)
            states[labels] = max(value, states.get(labels, 0))
        for labels, value in states.items():
            m.circuit_state.labels(*labels).set(value)

    def _cache(self, snap: CacheStatsSnapshot) -> None:
        m = self._m
        self._total(m.cache_stores, "stores", snap.stores)
        self._total(m.cache_not_stored, "not_stored", snap.not_stored)
        errors = self._total(m.cache_errors, "cache_errors", snap.errors)
        if errors:
            m.redis_errors.labels("cache").inc(errors)

    def _total(self, family: Counter, name: str, value: int) -> int:
        """Adds what `value` grew by since the last sync; returns that growth."""
        grew = value - self._seen.get((name, None), 0)
        self._seen[(name, None)] = value
        if grew > 0:
            family.inc(grew)
        return max(0, int(grew))


def _one(label: Callable[[str], str]) -> Callable[[str], tuple[str]]:
    return lambda raw: (label(raw if isinstance(raw, str) else OTHER),)


async def refresh_from_store(app: web.Application) -> None:
    """Budgets (spent per period) and month-to-date cost by key and model, from the store."""
    metrics = app[METRICS]
    accounting = app.get(ACCOUNTING)
    if accounting is None:
        return
    config = app[RUNTIME].config
    limits = budget_limits(config)
    day, month = local_periods()
    names = [spent_key(scope, f"d{day}" if p == "day" else f"m{month}") for scope, p, _ in limits]
    try:
        async with asyncio.timeout(STORE_READ_TIMEOUT_S):
            spent, stats = await asyncio.gather(accounting.read(names), accounting.stats(month))
    except (StoreUnavailable, TimeoutError):
        metrics.redis_error("metrics_refresh")
        return
    if app[RUNTIME].config is not config:  # reloaded meanwhile: a budget read may be gone
        return
    for (scope, period, limit), micro in zip(limits, spent, strict=True):
        metrics.set_budget(scope, period, micro / MICRO, limit)
    set_month_costs(metrics, stats)


def set_month_costs(metrics: Metrics, stats: Mapping[str, int]) -> None:
    """From the store's statistics hash of this month (`k:<key>:cost`, `m:<model>:cost`,
    micro-dollars). A key or model with no cost in it (a new month) is at 0, not at the value
    the last month left."""
    by_key: dict[str, float] = {}
    by_model: dict[str, float] = {}
    for field, value in stats.items():
        kind, _, rest = field.partition(":")
        name, _, what = rest.rpartition(":")
        if what != "cost":
            continue
        if kind == "k":
            label = metrics.key(name)
            by_key[label] = by_key.get(label, 0.0) + value / MICRO
        elif kind == "m":
            label = metrics.model(name)
            by_model[label] = by_model.get(label, 0.0) + value / MICRO
    gauges = (metrics.month_cost_by_key, metrics.month_cost_by_model)
    for gauge, values, shown in zip(
        gauges, (by_key, by_model), metrics.month_cost_labels, strict=True
    ):
        for label in shown - values.keys():
            gauge.labels(label).set(0)
        for label, usd_value in values.items():
            gauge.labels(label).set(usd_value)
        shown.update(values)

"""Every Prometheus metric of the gateway: names, labels and buckets, on one injectable registry.

`create_app` makes one `Metrics` per app (`app[METRICS]`); nothing is registered at import.
Labels take values only from bounded sets: names from the config (keys, routes, providers),
models named in the config or the price table (else "other"), status codes and fixed words.

Calls other modules make (all cheap, synchronous, never raising on a label they don't know):
  `set_budget(scope, period, spent_usd, limit_usd)`  scope `k:<key>`, `r:<route>`,
        `kr:<key>:<route>`; period `day` or `month`. The /metrics handler also refreshes these
        from the store at each scrape, so calling it after a settle is optional.
  `budget_alert(scope, percent)`  a budget crossed 50, 80 or 100 percent.
  `unpriced_model(model)`  a model without a price was billed the flat amount (requests whose
        context has `cost_source == "unpriced"` are already counted per request).
  `redis_error(operation)`  a store command failed or timed out (`operation`: a short word).
Per request, `gateway.observe.record_request` reads the finished context once and records
into plain sums (`add_at`, `observe_at`, at the label sets of its kind of request, made once:
`slot`), which `fold` brings into the families before every scrape and, in multiprocess mode,
every few seconds (gateway.exposition): a request pays a dict update per figure, not a
labelled child's lock and calls.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase

from gateway.config import GatewayConfig
from gateway.runtime import Runtime

PREFIX = "llm_gateway_"
# LLM latencies: from a cached answer (tens of ms) to a long generation (minutes).
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60)
# The gateway's own share of a request: a millisecond or two, more behind a slow store.
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
NONE = "none"  # the label value when a request never got that far (no key, no route)
# A request's (key, route, provider, model) names (None: not that far), and the label values
# they become.
Names = tuple[str | None, str | None, str | None, str | None]
Labels = tuple[str, str, str, str]
MAX_NAME_SETS = 4096
OTHER = "other"  # the label value for anything outside the bounded set
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
ANOMALIES = frozenset({"invalid_json", "empty", "truncated", "refusal"})
BUDGET_PERIODS = frozenset({"day", "month"})
_WORD = re.compile(r"^[a-z0-9_]{1,40}$")

METRICS: web.AppKey[Metrics] = web.AppKey("metrics")


def word(value: str) -> str:
    """A fixed word from the code (a reason, an outcome, an operation), else "other"."""
    return value if _WORD.match(value) else OTHER


class Metrics:
    """The metric families of one app, and the bounded label sets they accept."""

    def __init__(self, registry: CollectorRegistry, runtime: Runtime) -> None:
        self.registry = registry
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}
        # What requests recorded since the last `fold`, per (family, label values): counter
        # increments, and histogram observations as bucket counts then their sum.
        self.counts: dict[tuple[Counter, tuple[str, ...]], float] = {}
        self.observed: dict[tuple[Histogram, tuple[str, ...]], list[float]] = {}
        self.serving = 0  # requests being served now (the requests_in_flight gauge)
        # The key and model labels of the month-to-date cost gauges set so far: a label the
        # new month has no cost for yet is set to 0, not left at last month's.
        self.month_cost_labels: tuple[set[str], set[str]] = (set(), set())
        self.budgets = BudgetGauges()
        self.follow(runtime)
        self._define(registry)
        # Each request histogram's bucket bounds, +Inf last, as prometheus-client keeps them.
        self._bounds: dict[Histogram, tuple[float, ...]] = {
            self.request_duration: (*LATENCY_BUCKETS, float("inf")),
            self.upstream_duration: (*LATENCY_BUCKETS, float("inf")),
            self.ttft: (*TTFT_BUCKETS, float("inf")),
            self.overhead: (*OVERHEAD_BUCKETS, float("inf")),
            self.store_wait: (*OVERHEAD_BUCKETS, float("inf")),
        }
        self._define_derived(registry)
        self._define_budgets(registry)
        self._define_operations(registry)

    def follow(self, runtime: Runtime) -> None:
        """Bound labels by this config from now on (called again when the config reloads)."""
        config = runtime.config
        self.model = runtime.model_label
        self.keys = frozenset(k.name for k in config.keys)
        self.routes = frozenset(r.name for r in config.routes)
        self.providers = frozenset(config.providers)
        # The budgets this config has, and no other: a budget the reload removed is gone.
        self.budgets.limit_to(
            {(*self.scope_labels(s), period): limit for s, period, limit in budget_limits(config)}
        )
        # (key, route, provider, model) names -> their label values, under this config.
        self._names: dict[Names, Labels] = {}
        self._slots: dict[tuple[Names, str, str], Slot] = {}  # see `slot`

    def labels(self, names: Names) -> Labels:
        """The label values of a request's (key, route, provider, model) names, worked out
        once per name set (at most MAX_NAME_SETS kept: models come from clients)."""
        found = self._names.get(names)
        if found is None:
            if len(self._names) >= MAX_NAME_SETS:
                self._names.clear()
            key, route, provider, model = names
            found = (self.key(key), self.route(route), self.provider(provider), self.model(model))
            self._names[names] = found
        return found

    def slot(self, names: Names, status: str, cache: str) -> Slot:
        """Where a finished request with these names, status and cache result adds its
        figures: made once per such kind of request (at most MAX_NAME_SETS kept), so that a
        request builds no label tuple of its own."""
        at = (names, status, cache)
        found = self._slots.get(at)
        if found is None:
            if len(self._slots) >= MAX_NAME_SETS:
                self._slots.clear()
            found = self._slots[at] = Slot(self, self.labels(names), status, cache)
        return found

    def observe_at(self, at: Observed, value: float) -> None:
        """`observe`, at a slot's (family, label values) and that family's bucket bounds."""
        family_labels, bounds = at
        row = self.observed.get(family_labels)
        if row is None:
            row = self.observed[family_labels] = [0.0] * (len(bounds) + 1)
        row[bisect_left(bounds, value)] += 1  # the first bucket whose bound is >= value
        row[-1] += value

    def _define_operations(self, r: CollectorRegistry) -> None:
        self.config_reloads = Counter(
            f"{PREFIX}config_reloads",
            "Config reloads (SIGHUP, POST /admin/reload) by result: ok, error.",
            ["result"],
            registry=r,
        )
        self.store_circuit_state = Gauge(
            f"{PREFIX}store_circuit_state",
            "The store's circuit breaker: 0 closed, 2 open (the store is skipped).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.slow_connections_closed = Counter(
            f"{PREFIX}slow_connections_closed",
            "Connections closed for not sending their request headers in time.",
            registry=r,
        )

    def _define(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            f"{PREFIX}requests",
            "Requests answered, by key, route, provider, upstream model, status and cache result.",
            ["key", "route", "provider", "model", "status", "cache"],
            registry=r,
        )
        self.request_duration = Histogram(
            f"{PREFIX}request_duration_seconds",
            "Whole request, from arrival to the last byte sent (streams included).",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            f"{PREFIX}upstream_duration_seconds",
            "The upstream call of a request, retries and fallbacks included.",
            ["provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            f"{PREFIX}time_to_first_token_seconds",
            "Streamed requests: from arrival to the first byte of the answer.",
            ["route", "model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            f"{PREFIX}overhead_seconds",
            "The gateway's own time in a request: its whole duration less the upstream "
            "exchange, its own or an identical request's it waited for (all of it for a cache "
            "hit or a refusal).",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.store_wait = Histogram(
            f"{PREFIX}store_wait_seconds",
            "Of the gateway's own time in a request, its waits for the store on its way: the "
            "limits' verdict (with a cache lookup riding in it) and the bill its answer waits "
            "for, each until the request ran again (0 for a request that asked the store "
            "nothing).",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            f"{PREFIX}tokens",
            "Tokens billed upstream, by type: input (not cached), cached (input read from the "
            "provider's prompt cache) and output. Cache hits of the gateway spend none.",
            ["key", "route", "model", "type"],
            registry=r,
        )
        self.cost = Counter(
            f"{PREFIX}cost_usd",
            "What requests cost, in USD, as billed to the key.",
            ["key", "route", "model"],
            registry=r,
        )
        self.rejections = Counter(
            f"{PREFIX}rejections",
            "Requests the gateway refused itself: auth, forbidden, rate_limit, budget, "
            "bad_request, too_large, not_found, unavailable.",
            ["key", "route", "reason"],
            registry=r,
        )
        self.anomalies = Counter(
            f"{PREFIX}output_anomalies",
            "Answers with an anomaly: invalid_json (JSON mode), empty, truncated, refusal.",
            ["route", "model", "kind"],
            registry=r,
        )
        self.in_flight = Gauge(  # set from `serving` at each fold
            f"{PREFIX}requests_in_flight",
            "Requests being served now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.streams_in_flight = Gauge(
            f"{PREFIX}streams_in_flight",
            "Streamed requests whose upstream call is under way now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.redis_errors = Counter(
            f"{PREFIX}redis_errors",
            "Store commands that failed or timed out, by operation.",
            ["operation"],
            registry=r,
        )
        self.unpriced = Counter(
            f"{PREFIX}unpriced_requests",
            "Requests to a model without a price, billed the configured flat amount.",
            ["model"],
            registry=r,
        )
        self.request_log_dropped = Counter(
            f"{PREFIX}request_log_dropped",
            "Request log entries not written to the store (slow or unreachable store).",
            registry=r,
        )

    def _define_derived(self, r: CollectorRegistry) -> None:
        """Cache and resilience: lookups and savings per request, the rest from the counters
        the cache and the resilience layer keep in process (see gateway.stats_export)."""
        self.cache_lookups = Counter(
            f"{PREFIX}cache_lookups",
            "Response cache results: hit, miss, bypass, stale.",
            ["route", "result"],
            registry=r,
        )
        self.cache_saved_usd = Counter(
            f"{PREFIX}cache_saved_usd",
            "What cache hits saved, in USD: the upstream cost of the answers they replayed.",
            ["key", "route"],
            registry=r,
        )
        self.cache_saved_tokens = Counter(
            f"{PREFIX}cache_saved_tokens",
            "Upstream tokens cache hits did not spend.",
            ["route"],
            registry=r,
        )
        self.cache_stores = Counter(
            f"{PREFIX}cache_stores", "Answers written to the response cache.", registry=r
        )
        self.cache_not_stored = Counter(
            f"{PREFIX}cache_not_stored",
            "Cacheable answers not stored (not a complete success, or too large).",
            registry=r,
        )
        self.cache_errors = Counter(
            f"{PREFIX}cache_errors",
            "Cache store failures and timeouts (each failed open: the request went upstream).",
            registry=r,
        )
        self.attempts = Counter(
            f"{PREFIX}upstream_attempts",
            "Upstream attempts by outcome: ok, http_<status>, connect_error, timeout, ...",
            ["provider", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            f"{PREFIX}retries",
            "Upstream attempts that were retried, by the reason of the retry.",
            ["provider", "reason"],
            registry=r,
        )
        self.retry_budget_exhausted = Counter(
            f"{PREFIX}retry_budget_exhausted",
            "Retries not made because the provider's retry budget was spent.",
            ["provider"],
            registry=r,
        )
        self.fallbacks = Counter(
            f"{PREFIX}fallbacks",
            "Requests that fell back to another target, by route and the provider fallen back to.",
            ["route", "provider"],
            registry=r,
        )
        self.hedges = Counter(
            f"{PREFIX}hedges",
            "Hedged attempts: started, won, lost.",
            ["route", "result"],
            registry=r,
        )
        self.stream_interruptions = Counter(
            f"{PREFIX}stream_interruptions",
            "Streams that broke off after their first byte.",
            ["provider"],
            registry=r,
        )
        self.circuit_state = Gauge(
            f"{PREFIX}circuit_state",
            "Circuit breaker per provider and model: 0 closed, 1 half-open, 2 open.",
            ["provider", "model"],
            registry=r,
            multiprocess_mode="livemax",
        )

    def _define_budgets(self, r: CollectorRegistry) -> None:
        r.register(self.budgets)
        self.budget_alerts = Counter(
            f"{PREFIX}budget_alerts",
            "Budget thresholds crossed (50, 80, 100 percent).",
            ["key", "route", "percent"],
            registry=r,
        )
        self.month_cost_by_key = Gauge(
            f"{PREFIX}key_month_cost_usd",
            "Spent this UTC calendar month per key, as the store has it (every replica agrees).",
            ["key"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.month_cost_by_model = Gauge(
            f"{PREFIX}model_month_cost_usd",
            "Spent this UTC calendar month per upstream model, as the store has it.",
            ["model"],
            registry=r,
            multiprocess_mode="mostrecent",
        )

    def scope_labels(self, scope: str) -> tuple[str, str]:
        """(key, route) of a budget scope `k:<key>`, `r:<route>` or `kr:<key>:<route>`."""
        kind, _, rest = scope.partition(":")
        if kind == "k":
            return self.key(rest), ""
        if kind == "r":
            return "", self.route(rest)
        if kind == "kr":
            key, _, route = rest.partition(":")
            return self.key(key), self.route(route)
        return OTHER, OTHER

    def add(self, family: Counter, labels: tuple[str, ...], amount: float = 1) -> None:
        """Count `amount` on a request counter's label set, until the next fold."""
        self.add_at((family, labels), amount)

    def add_at(self, at: Counted, amount: float) -> None:
        """`add`, at a slot's (family, label values)."""
        counts = self.counts
        counts[at] = counts.get(at, 0) + amount

    def observe(self, family: Histogram, labels: tuple[str, ...], value: float) -> None:
        """Observe `value` on a request histogram's label set, until the next fold."""
        self.observe_at(((family, labels), self._bounds[family]), value)

    def fold(self) -> None:
        """Bring what requests recorded into the families (and the in-flight gauge)."""
        counts, self.counts = self.counts, {}
        for (family, labels), amount in counts.items():
            self.child(family, *labels).inc(amount)  # a zero still shows the series
        observed, self.observed = self.observed, {}
        for (histogram, labels), row in observed.items():
            # prometheus-client has no call that adds many observations at once: its
            # histogram keeps one value per bucket, and their sum (tests/unit/test_metrics.py
            # checks a fold against the same observations made one by one).
            child = self.child(histogram, *labels)
            for bucket, n in zip(child._buckets, row, strict=False):
                if n:
                    bucket.inc(n)
            child._sum.inc(row[-1])
        self.in_flight.set(self.serving)

    def child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set: every label set is bounded,
        and `labels` validates and locks on each call, which a request should not pay for."""
        found = self._children.get((metric, labels))
        if found is None:
            found = self._children[(metric, labels)] = metric.labels(*labels)
        return found

    def key(self, name: str | None) -> str:
        return NONE if name is None else (name if name in self.keys else OTHER)

    def route(self, name: str | None) -> str:
        return NONE if name is None else (name if name in self.routes else OTHER)

    def provider(self, name: str | None) -> str:
        return NONE if name is None else (name if name in self.providers else OTHER)

    def set_budget(
        self, scope: str, period: str, spent_usd: float | None, limit_usd: float | None
    ) -> None:
        """The spend and limit of one budget in its current period (None: leave as it is)."""
        labels = (*self.scope_labels(scope), period if period in BUDGET_PERIODS else OTHER)
        if spent_usd is not None:
            self.budgets.spent[labels] = spent_usd
        if limit_usd is not None:
            self.budgets.limits[labels] = limit_usd

    def budget_alert(self, scope: str, percent: int) -> None:
        key, route = self.scope_labels(scope)
        self.budget_alerts.labels(key, route, _percent(percent)).inc()

    def unpriced_model(self, model: str | None) -> None:
        self.unpriced.labels(self.model(model)).inc()

    def redis_error(self, operation: str) -> None:
        self.redis_errors.labels(word(operation)).inc()


BudgetLabels = tuple[str, str, str]  # key, route, period


class BudgetGauges:
    """`llm_gateway_budget_spent_usd` and `_limit_usd`, as a collector: the budgets of the
    config served now and no other (a budget a reload removed leaves both series at once,
    rather than stay frozen on its last spend, still over a threshold an alert watches), the
    spend as the store had it at its last read. These are the store's figures, no process's
    own: in multiprocess mode the worker that answers the scrape reports its own read of
    them, not the workers' files (prometheus-client cannot remove a series from those)."""

    LABELS = ("key", "route", "period")

    def __init__(self) -> None:
        self.limits: dict[BudgetLabels, float] = {}
        self.spent: dict[BudgetLabels, float] = {}

    def limit_to(self, limits: dict[BudgetLabels, float]) -> None:
        """The budgets of a (new) config; the spend read for those it kept stays."""
        self.limits = limits
        self.spent = {labels: v for labels, v in self.spent.items() if labels in limits}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return self._families(False)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return self._families(True)

    def _families(self, samples: bool) -> Iterator[GaugeMetricFamily]:
        spent = GaugeMetricFamily(
            f"{PREFIX}budget_spent_usd",
            "Spent in the current UTC period, per budget (key, route or key on route).",
            labels=self.LABELS,
        )
        limit = GaugeMetricFamily(
            f"{PREFIX}budget_limit_usd",
            "The configured limit per budget and period.",
            labels=self.LABELS,
        )
        # Copies: in multiprocess mode a thread renders, while a scrape's read may set them.
        limits, spent_usd = (dict(self.limits), dict(self.spent)) if samples else ({}, {})
        for labels, value in limits.items():
            limit.add_metric(labels, value)
            if labels in spent_usd:
                spent.add_metric(labels, spent_usd[labels])
        yield spent
        yield limit


Counted = tuple[Counter, tuple[str, ...]]  # a key of `Metrics.counts`
Observed = tuple[tuple[Histogram, tuple[str, ...]], tuple[float, ...]]  # and its bounds


class Slot:
    """The (family, label values) of every sum that a finished request of one kind (its
    names, status and cache result) may add to; see `Metrics.slot`."""

    __slots__ = (
        "cache_lookups", "cache_saved_tokens", "cache_saved_usd", "cost", "duration", "key",
        "model", "overhead", "requests", "route", "store_wait", "tokens_cached",
        "tokens_input", "tokens_output", "ttft", "unpriced", "upstream",
    )  # fmt: skip

    def __init__(self, m: Metrics, labels: Labels, status: str, cache: str) -> None:
        key, route, provider, model = labels
        self.key, self.route, self.model = key, route, model

        def observed(family: Histogram, *values: str) -> Observed:
            return (family, values), m._bounds[family]

        self.requests: Counted = (m.requests, (key, route, provider, model, status, cache))
        self.duration = observed(m.request_duration, route, model)
        self.overhead = observed(m.overhead, route)
        self.store_wait = observed(m.store_wait, route)
        self.ttft = observed(m.ttft, route, model)
        self.upstream = observed(m.upstream_duration, provider, model)
        self.tokens_input: Counted = (m.tokens, (key, route, model, "input"))
        self.tokens_cached: Counted = (m.tokens, (key, route, model, "cached"))
        self.tokens_output: Counted = (m.tokens, (key, route, model, "output"))
        self.cost: Counted = (m.cost, (key, route, model))
        self.unpriced: Counted = (m.unpriced, (model,))
        self.cache_lookups: Counted = (m.cache_lookups, (route, cache))
        self.cache_saved_usd: Counted = (m.cache_saved_usd, (key, route))
        self.cache_saved_tokens: Counted = (m.cache_saved_tokens, (route,))


def _percent(percent: int) -> str:
    return str(percent) if percent in (50, 80, 100) else OTHER


def budget_limits(config: GatewayConfig) -> list[tuple[str, str, float]]:
    """(scope, period, limit in USD) of every USD budget in the config."""
    found = [(f"k:{k.name}", k.budget) for k in config.keys]
    found += [(f"r:{r.name}", r.budget) for r in config.routes]
    found += [
        (f"kr:{k.name}:{route}", b) for k in config.keys for route, b in k.route_budgets.items()
    ]
    out: list[tuple[str, str, float]] = []
    for scope, budget in found:
        if budget is None:
            continue
        if budget.usd_per_day is not None:
            out.append((scope, "day", budget.usd_per_day))
        if budget.usd_per_month is not None:
            out.append((scope, "month", budget.usd_per_month))
    return out

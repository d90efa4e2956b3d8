"""The measured figures of one run, and what follows from them (added latency, ratios)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar


def cpu_us_per_request(ticks: int, clock_ticks: int, requests: int) -> float | None:
    """CPU microseconds per request from a utime+stime delta in clock ticks."""
    if requests <= 0:
        return None
    return round(ticks * 1_000_000 / clock_ticks / requests, 1)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def minus(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """One wrk phase. CPU figures are per request completed; None where not measured."""

    target: str
    latency_ms: int
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    proxy_cpu_us: float | None
    mock_cpu_us: float | None
    store_cpu_us: float | None
    proxy_core_pct: float | None
    load_core_pct: float | None
    store_commands: float | None = None
    # Busy time not charged to the run's processes (kernel network work, other jobs), in
    # percent of one core.
    other_pct: float | None = None
    # The gateway's own time in its answered requests, as its request log gives it
    # (`overhead_ms`: see gateway.bench.own); None for the other targets.
    own_p50_ms: float | None = None
    own_p99_ms: float | None = None
    own_store_p50_ms: float | None = None  # the median request's wait for the store in it
    round: int = 0  # which run of its target (see Options.rounds)
    # Derived, filled by `derive`.
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    cpu_vs_forwarder: float | None = None
    # Filled by `summarize`: how many runs the row sums up, and their lowest and highest
    # proxy CPU per request.
    runs: int = 1
    proxy_cpu_range: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class StreamResult:
    target: str
    latency_ms: int
    connections: int
    requests: int
    errors: int
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    proxy_cpu_us: float | None
    round: int = 0  # which run of its target (see Options.rounds)
    words: int = 0  # the answer's length (0: the mock's short one; see plan.LONG_WORDS)
    added_ttft_p50_ms: float | None = None
    added_ttft_p99_ms: float | None = None
    cpu_vs_forwarder: float | None = None  # against the forwarder of the same round
    # Filled by `summarize_streams`: how many runs the row sums up, and the lowest and the
    # highest of their p50s.
    runs: int = 1
    ttft_p50_range: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class MemoryResult:
    process: str
    idle_mib: float  # resident after start-up and one request of each kind
    end_mib: float  # resident after every phase
    peak_mib: float  # the high-water mark


@dataclass(frozen=True, slots=True)
class SoakResult:
    seconds: float
    rps: float
    errors: int
    samples_mib: list[tuple[float, float]]  # (seconds since start, resident MiB)

    @property
    def start_mib(self) -> float:
        return self.samples_mib[0][1]

    @property
    def end_mib(self) -> float:
        return self.samples_mib[-1][1]

    @property
    def growth_mib(self) -> float:
        """End against the first sample taken after a tenth of the run (warm)."""
        warm = next((m for t, m in self.samples_mib if t >= self.seconds / 10), self.start_mib)
        return round(self.end_mib - warm, 1)


@dataclass(frozen=True, slots=True)
class WorkersResult:
    workers: int
    rps: float
    p50_ms: float
    p99_ms: float
    proxy_cpu_us: float | None
    errors: int
    round: int = 0  # 1 and 2 workers take turns, as many rounds as `--rounds`


@dataclass(slots=True)
class Report:
    command: str
    date: str
    machine: dict[str, Any]
    cpus: str
    options: dict[str, Any]
    phases: list[PhaseResult] = field(default_factory=list)  # one row per target (medians)
    runs: list[PhaseResult] = field(default_factory=list)  # every wrk run, in order
    streams: list[StreamResult] = field(default_factory=list)  # one row per target (medians)
    stream_runs: list[StreamResult] = field(default_factory=list)  # every streaming run
    memory: list[MemoryResult] = field(default_factory=list)
    soak: SoakResult | None = None
    workers: list[WorkersResult] = field(default_factory=list)
    workers_note: str = ""
    # How many CPUs the workers were pinned to: 2, a core each (their scaling is judged);
    # 0, not pinned (sharing the cores with the load, their figures say little).
    workers_cpus: int = 0
    # A core each, the second worker's shared with the load (a two-CPU machine): the speed-up
    # is projected from the CPU per request, as the requests/s cannot show it.
    workers_beside_load: bool = False
    notes: list[str] = field(default_factory=list)


def derive(phases: list[PhaseResult]) -> list[PhaseResult]:
    """Added latency over `direct` and CPU over the forwarder of the same round, at equal
    latency and connections. Where `direct` ran more than once, each percentile's baseline is
    its best run."""
    by = {
        (p.target, p.latency_ms, p.connections, p.round): p for p in phases if p.target != "direct"
    }
    directs = _best_directs(
        [(p.latency_ms, p.connections, p.p50_ms, p.p99_ms) for p in phases if p.target == "direct"]
    )
    out = []
    for p in phases:
        direct = directs.get((p.latency_ms, p.connections))
        forwarder = by.get(("forwarder", p.latency_ms, p.connections, p.round))
        if p.target == "gateway-hit":  # measured at one latency: compare with 0 ms direct
            direct = directs.get((0, p.connections)) or direct
            forwarder = by.get(("forwarder", 0, p.connections, p.round)) or forwarder
        if p.target == "direct" or direct is None:
            out.append(p)
            continue
        out.append(
            replace(
                p,
                added_p50_ms=minus(p.p50_ms, direct[0]),
                added_p99_ms=minus(p.p99_ms, direct[1]),
                cpu_vs_forwarder=ratio(p.proxy_cpu_us, forwarder.proxy_cpu_us)
                if forwarder is not None and p.target != "forwarder"
                else None,
            )
        )
    return out


def summarize(runs: list[PhaseResult]) -> list[PhaseResult]:
    """One row per target, latency and connections, in the order first run: the median of
    its runs (of the per-round ratio, too), errors and requests summed. `direct` shows the
    baseline the proxies were measured against: its best p50 and its best p99."""
    return [_summary(g) for g in _grouped(runs, lambda r: (r.target, r.latency_ms, r.connections))]


Run = TypeVar("Run", PhaseResult, "StreamResult")


def _grouped(runs: list[Run], key: Callable[[Run], tuple[str, int, int]]) -> list[list[Run]]:
    """`runs` by `key`, in the order of each key's first run."""
    groups: dict[tuple[str, int, int], list[Run]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return list(groups.values())


def _median(group: Sequence[PhaseResult | StreamResult], name: str, digits: int = 3) -> Any:
    """The median of a field over the runs that have it (None when none has)."""
    values = [getattr(r, name) for r in group if getattr(r, name) is not None]
    return round(statistics.median(values), digits) if values else None


def _summary(group: list[PhaseResult]) -> PhaseResult:
    first = group[0]
    cpus = [r.proxy_cpu_us for r in group if r.proxy_cpu_us is not None]
    best = first.target == "direct"

    def med(name: str, digits: int = 3) -> Any:
        return _median(group, name, digits)

    return replace(
        first,
        requests=sum(r.requests for r in group),
        rps=med("rps"),
        p50_ms=min(r.p50_ms for r in group) if best else med("p50_ms"),
        p99_ms=min(r.p99_ms for r in group) if best else med("p99_ms"),
        errors=sum(r.errors for r in group),
        proxy_cpu_us=med("proxy_cpu_us"),
        mock_cpu_us=med("mock_cpu_us"),
        store_cpu_us=med("store_cpu_us"),
        proxy_core_pct=med("proxy_core_pct"),
        load_core_pct=med("load_core_pct"),
        store_commands=med("store_commands"),
        other_pct=med("other_pct"),
        own_p50_ms=med("own_p50_ms"),
        own_p99_ms=med("own_p99_ms"),
        own_store_p50_ms=med("own_store_p50_ms"),
        added_p50_ms=med("added_p50_ms"),
        added_p99_ms=med("added_p99_ms"),
        cpu_vs_forwarder=med("cpu_vs_forwarder", 2),  # two places, as `ratio` gives them
        runs=len(group),
        proxy_cpu_range=(min(cpus), max(cpus)) if len(cpus) > 1 else None,
    )


def derive_streams(streams: list[StreamResult]) -> list[StreamResult]:
    """As `derive`: added time to first token over `direct` with the same latency and answer
    (each percentile's best run), and CPU over the forwarder of the same round."""
    by = {(s.target, s.latency_ms, s.words, s.round): s for s in streams}
    directs = _best_directs(
        [
            (s.latency_ms, s.words, s.ttft_p50_ms, s.ttft_p99_ms)
            for s in streams
            if s.target == "direct"
        ]
    )
    out = []
    for s in streams:
        direct = directs.get((s.latency_ms, s.words))
        if s.target == "direct" or direct is None:
            out.append(s)
            continue
        forwarder = by.get(("forwarder", s.latency_ms, s.words, s.round))
        out.append(
            replace(
                s,
                added_ttft_p50_ms=minus(s.ttft_p50_ms, direct[0]),
                added_ttft_p99_ms=minus(s.ttft_p99_ms, direct[1]),
                cpu_vs_forwarder=ratio(s.proxy_cpu_us, forwarder.proxy_cpu_us)
                if forwarder is not None and s.target != "forwarder"
                else None,
            )
        )
    return out


def summarize_streams(runs: list[StreamResult]) -> list[StreamResult]:
    """As `summarize`: one row per target, latency and answer, the median of its runs
    (`direct`: its best p50 and its best p99, the baseline), streams and errors summed."""
    groups = _grouped(runs, lambda r: (r.target, r.latency_ms, r.words))
    return [_stream_summary(group) for group in groups]


def _stream_summary(group: list[StreamResult]) -> StreamResult:
    first = group[0]
    best = first.target == "direct"
    p50s = [r.ttft_p50_ms for r in group if r.ttft_p50_ms is not None]

    def med(name: str, digits: int = 3) -> Any:
        if not best:
            return _median(group, name, digits)
        values = [getattr(r, name) for r in group if getattr(r, name) is not None]
        return min(values) if values else None

    return replace(
        first,
        requests=sum(r.requests for r in group),
        errors=sum(r.errors for r in group),
        ttft_p50_ms=med("ttft_p50_ms"),
        ttft_p99_ms=med("ttft_p99_ms"),
        proxy_cpu_us=med("proxy_cpu_us"),
        added_ttft_p50_ms=med("added_ttft_p50_ms"),
        added_ttft_p99_ms=med("added_ttft_p99_ms"),
        cpu_vs_forwarder=med("cpu_vs_forwarder", 2),
        runs=len(group),
        ttft_p50_range=(min(p50s), max(p50s)) if len(p50s) > 1 and not best else None,
    )


Baseline = tuple[float | None, float | None]  # the best p50 and the best p99, in ms


def _best_directs(
    runs: list[tuple[int, int, float | None, float | None]],
) -> dict[tuple[int, int], Baseline]:
    """(latency, connections or words) -> the lowest p50 and the lowest p99 of its `direct`
    runs."""
    best: dict[tuple[int, int], Baseline] = {}
    for latency, connections, p50, p99 in runs:
        old50, old99 = best.get((latency, connections), (None, None))
        best[(latency, connections)] = (_lower(old50, p50), _lower(old99, p99))
    return best


def _lower(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)

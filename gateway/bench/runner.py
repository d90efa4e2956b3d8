"""One benchmark run: start the stack, drive every phase, collect the figures."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from gateway.bench import procs, ttft, wrk
from gateway.bench.machine import python_speed_ms, round_trips_ms
from gateway.bench.own import Own, own_overhead
from gateway.bench.plan import Options, Phase, StreamPhase, stream_phases, wrk_phases
from gateway.bench.procs import BenchError, Cpus, Proc
from gateway.bench.results import (
    MemoryResult,
    PhaseResult,
    Report,
    StreamResult,
    WorkersResult,
    cpu_us_per_request,
    derive,
    derive_streams,
    summarize,
    summarize_streams,
)
from gateway.bench.soak import soak
from gateway.bench.stack import PATH, Stack, chat_load, help_mentions
from gateway.requestlog import FLUSH_S

Say = Callable[[str], None]
# What the gateway sends Redis on a request's path: scripts only (the request log's XADD runs
# inside one). Commands a Lua script runs are counted by Redis too, so the total of all
# commands would not say how many the gateway sent.
CLIENT_COMMANDS = ("cmdstat_evalsha", "cmdstat_eval")


@dataclass(slots=True)
class Meters:
    """CPU readings around one phase: the proxy's, the mock's, Redis's, and each core's."""

    clock: int
    redis_pid: int | None
    store: redis.Redis

    def read(self, proxy: Proc | None, mock: Proc) -> dict[str, object]:
        info = self.store.info("commandstats")
        return {
            "proxy": proxy.ticks() if proxy else 0,
            "mock": mock.ticks(),
            "redis": procs.tree_ticks(self.redis_pid) if self.redis_pid else None,
            "cores": procs.cpu_times(),
            "own": procs.own_ticks(),
            "commands": sum(int(info[c]["calls"]) for c in CLIENT_COMMANDS if c in info),
        }


def _delta(after: dict[str, object], before: dict[str, object], name: str) -> int | None:
    a, b = after[name], before[name]
    return a - b if isinstance(a, int) and isinstance(b, int) else None


# The machine facts `Run.execute` adds: see `round_trips_ms` and `python_speed_ms`.
ROUND_TRIP = "Store round trip (PING from the proxy's CPU)"
PYTHON_SPEED = "Python's speed on the proxy's CPU"


class Run:
    """The stack, the load generator and the meters of one run; `execute` fills a report."""

    def __init__(self, options: Options, workdir: Path, say: Say) -> None:
        self.options = options
        self.say = say
        self.wrk = wrk.ensure_wrk()
        self.cpus: Cpus = procs.choose_cpus(sorted(os.sched_getaffinity(0)), options.pin)
        self.store = redis.Redis.from_url(options.redis_url)
        self.stack = Stack(workdir, self.cpus, options.redis_url)
        self.meters = Meters(procs.clock_ticks(), procs.find_process("redis-server"), self.store)

    def execute(self, report: Report) -> None:
        with procs.moved(self.meters.redis_pid, self.cpus.load, "Redis") as redis_note:
            report.cpus = f"{report.cpus}; {redis_note}"
            procs.pin_self(self.cpus.proxy)  # from where the proxy reaches the store
            report.machine[ROUND_TRIP] = round_trips_ms(self.store.ping, time.sleep)
            report.machine[PYTHON_SPEED] = python_speed_ms()
            procs.pin_self(self.cpus.load)  # this process and the streaming client
            self._execute(report)

    def _execute(self, report: Report) -> None:
        self.store.flushdb()
        try:
            self.say(f"starting mock, forwarder and gateway ({self.cpus.note})")
            self.stack.start()
            self.stack.smoke()
            idle = {n: p.memory_kib()[0] for n, p in self.stack.procs.items()}
            self._warm_up()
            report.runs = derive([self._phase(p) for p in wrk_phases(self.options)])
            report.phases = summarize(report.runs)
            streams = [self._stream(s) for s in stream_phases(self.options)]
            report.stream_runs = derive_streams(streams)
            report.streams = summarize_streams(report.stream_runs)
            if self.options.soak_s > 0:
                self.say(f"soak: {self.options.soak_s:g} s")
                report.soak = soak(self, self.options.soak_s)
            report.memory = self._memory(idle)
            self.stack.stop_all()
            self._workers(report)
        finally:
            self.stack.stop_all()
            self.store.flushdb()

    def _warm_up(self) -> None:
        """Connection pools, caches and the interpreter's own warm-up, before any figure."""
        for target in ("direct", "forwarder", "gateway-miss"):
            self._wrk(target, 0, 16, self.options.warmup_s)

    def wrk_command(self, target: str, latency: int, conns: int, seconds: float) -> list[str]:
        kind = "gateway" if target.startswith("gateway") else target
        fixed = target == "gateway-hit"
        return chat_load(
            self.wrk,
            self.stack.url(kind),
            self.stack.auth(kind),
            latency_ms=latency,
            fixed=fixed,
            conns=conns,
            seconds=seconds,
        )

    def _wrk(self, target: str, latency: int, conns: int, seconds: float) -> wrk.WrkResult:
        return wrk.run_wrk(self.wrk_command(target, latency, conns, seconds), seconds)

    def proxy_for(self, target: str) -> Proc | None:
        if target == "direct":
            return None
        return self.stack.procs["forwarder" if target == "forwarder" else "gateway"]

    def _phase(self, phase: Phase) -> PhaseResult:
        self.say(f"wrk: {phase.name}")
        if phase.target == "gateway-hit":
            self.stack.prime_hit()
        proxy, mock = self.proxy_for(phase.target), self.stack.procs["mock"]
        before = self.meters.read(proxy, mock)
        since = time.time()
        result = self._wrk(
            phase.target, phase.latency_ms, phase.connections, self.options.duration_s
        )
        until = time.time()
        after = self.meters.read(proxy, mock)
        return self._result(phase, result, before, after, self._own(phase, since, until))

    def _own(self, phase: Phase, since: float, until: float) -> Own | None:
        """The gateway's own time in the phase's requests, from its request log (read after
        the meters, once the last entries have had time to reach the store)."""
        if not phase.target.startswith("gateway"):
            return None
        time.sleep(4 * FLUSH_S)
        return own_overhead(self.store, since, until)

    def _result(
        self,
        phase: Phase,
        r: wrk.WrkResult,
        before: dict[str, object],
        after: dict[str, object],
        own: Own | None = None,
    ) -> PhaseResult:
        per = self._per_request(r.requests, before, after)
        return PhaseResult(
            target=phase.target,
            latency_ms=phase.latency_ms,
            connections=phase.connections,
            requests=r.requests,
            rps=r.rps,
            p50_ms=r.p50_ms,
            p99_ms=r.p99_ms,
            errors=r.errors,
            proxy_cpu_us=per("proxy") if phase.target != "direct" else None,
            mock_cpu_us=per("mock") if phase.target != "gateway-hit" else None,
            store_cpu_us=per("redis") if phase.target.startswith("gateway") else None,
            proxy_core_pct=self._busy(before, after, self.cpus.proxy),
            load_core_pct=self._busy(before, after, self.cpus.load),
            other_pct=self._other(before, after),
            store_commands=self._commands(r.requests, before, after, phase.target),
            own_p50_ms=own.p50_ms if own else None,
            own_p99_ms=own.p99_ms if own else None,
            own_store_p50_ms=own.store_p50_ms if own else None,
            round=phase.round,
        )

    def _per_request(
        self, requests: int, before: dict[str, object], after: dict[str, object]
    ) -> Callable[[str], float | None]:
        def per(name: str) -> float | None:
            ticks = _delta(after, before, name)
            return None if ticks is None else cpu_us_per_request(ticks, self.meters.clock, requests)

        return per

    @staticmethod
    def _other(before: dict[str, object], after: dict[str, object]) -> float | None:
        a, b = after["cores"], before["cores"]
        if not isinstance(a, dict) or not isinstance(b, dict):
            return None
        ours = sum(_delta(after, before, n) or 0 for n in ("proxy", "mock", "redis", "own"))
        return procs.other_percent(b, a, ours)

    @staticmethod
    def _busy(
        before: dict[str, object], after: dict[str, object], cpus: frozenset[int] | None
    ) -> float | None:
        a, b = after["cores"], before["cores"]
        if cpus is None or not isinstance(a, dict) or not isinstance(b, dict):
            return None
        return procs.busy_percent(b, a, cpus)

    @staticmethod
    def _commands(
        requests: int, before: dict[str, object], after: dict[str, object], target: str
    ) -> float | None:
        calls = _delta(after, before, "commands")
        if not target.startswith("gateway") or calls is None or requests <= 0:
            return None
        return round(calls / requests, 2)

    def _stream(self, phase: StreamPhase) -> StreamResult:
        self.say(f"streaming: {phase.name}")
        proxy, mock = self.proxy_for(phase.target), self.stack.procs["mock"]
        duration = self.options.stream_duration_s
        argv = ttft.command(
            self.stack.url(phase.target) + PATH,
            self.stack.auth(phase.target),
            phase.connections,
            phase.latency_ms,
            duration,
            phase.words,
            phase.chunk_delay_ms,
        )
        before = self.meters.read(proxy, mock)
        s = ttft.run(argv, duration)
        after = self.meters.read(proxy, mock)
        per = self._per_request(s["requests"], before, after)
        return StreamResult(
            target=phase.target,
            latency_ms=phase.latency_ms,
            connections=phase.connections,
            requests=s["requests"],
            errors=s["errors"],
            ttft_p50_ms=s["ttft_p50_ms"],
            ttft_p99_ms=s["ttft_p99_ms"],
            proxy_cpu_us=per("proxy") if proxy is not None else None,
            round=phase.round,
            words=phase.words,
        )

    def _memory(self, idle: dict[str, int]) -> list[MemoryResult]:
        out = []
        for name in ("mock", "forwarder", "gateway"):
            rss, hwm, _ = self.stack.procs[name].memory_kib()
            out.append(MemoryResult(name, idle[name] / 1024, rss / 1024, hwm / 1024))
        return out

    def _workers(self, report: Report) -> None:
        """`gateway serve --workers N`, 1 then 2, in turns, when the command offers it: the
        first worker on the proxy's CPU, the second on a CPU of its own (with two CPUs, the
        load's). Cache hits: the gateway's own work, the mock out of the way, which on two
        CPUs shares the second worker's core."""
        if not self.options.workers:
            report.workers_note = "not run (--no-workers)"
            return
        if not help_mentions("--workers"):
            report.workers_note = "pending: `gateway serve` has no --workers option yet"
            return
        cpus = self.cpus.workers
        report.workers_cpus = len(set(cpus)) if cpus else 0
        report.workers_beside_load = self.cpus.workers_beside_load
        report.workers_note = "cache hits, c64, " + _placement(self.cpus)
        self.stack.start_mock()
        try:
            for round_ in range(max(1, self.options.rounds)):
                for n in (1, 2):
                    report.workers.append(self._workers_run(n, cpus, round_))
        finally:
            self.stack.stop_all()

    def _workers_run(self, n: int, cpus: tuple[int, ...] | None, round_: int) -> WorkersResult:
        self.say(f"workers: {n} #{round_ + 1}")
        first = frozenset(cpus[:1]) if cpus else None
        proc = self.stack.start_gateway(f"gateway-{n}w", ["--workers", str(n)], first)
        try:
            if cpus and n > 1:
                procs.place_workers(proc.pid, cpus, n)
            self.stack.prime_hit()
            self._wrk("gateway-hit", 0, 16, self.options.warmup_s)
            before = self.meters.read(proc, self.stack.procs["mock"])
            r = self._wrk("gateway-hit", 0, 64, self.options.duration_s)
            after = self.meters.read(proc, self.stack.procs["mock"])
        finally:
            self.stack.stop(f"gateway-{n}w")
        per = self._per_request(r.requests, before, after)
        return WorkersResult(n, r.rps, r.p50_ms, r.p99_ms, per("proxy"), r.errors, round_)


def _placement(machine: Cpus) -> str:
    cpus = machine.workers
    if cpus is None:
        return f"workers {machine.note}: they share the cores with wrk and the mock"
    first, second = cpus[0], cpus[1]
    if machine.workers_beside_load:
        return (
            f"one worker alone on CPU {first}, two on CPUs {first} and {second}, the second "
            f"beside wrk, the mock and Redis (a machine with two CPUs has no third for them): "
            "the speed-up is projected from the CPU per request, the requests/s shown"
        )
    return f"one worker on CPU {first}, two on CPUs {first} and {second}"


def redis_version(url: str) -> str:
    try:
        info = redis.Redis.from_url(url).info("server")
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {url} does not answer: {exc}") from None
    return f"{info.get('redis_version', '?')}"


def now_utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime())

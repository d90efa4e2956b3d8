"""`python -m gateway.bench.compare --base DIR`: this version of the gateway against another.

CPU time per request drifts by 10 % and more over minutes on a shared machine, more than most
single changes save, so two versions measured one after the other compare the machine as much
as the code. Here both run at once, each its own `gateway serve` on the same CPU in front of
one mock provider and one Redis database, and wrk alternates short phases between them
(A B B A ...): the drift falls on both, and each pair's ratio compares the code. The other
version is the `gateway/` package in DIR (a checkout, or `git worktree add DIR <commit>`).
`--base-python PATH` runs it on another interpreter (a virtualenv's python holding the
gateway's dependencies): with `--base .`, the same code on two interpreters.

Each pair runs on gateways started for it (`--same-processes`: one each for the whole run).
One process can be cheaper than another of the same code for as long as it lives (where its
memory landed, its hash seed): run against itself with one process each, a version measured
0.96x in one run (every pair below 1) and 1.18x in another. Fresh processes turn that into
noise within a pair, which the median of the pairs absorbs: 0.94x, 0.97x and 1.00x in three
such runs.

Both are started from the run's own directory: `python -m` puts the current directory first
on `sys.path`, ahead of `PYTHONPATH`, so two versions started from inside a checkout would
both run that checkout's code.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis

import gateway
from gateway.bench import procs, ttft, wrk
from gateway.bench.plan import DEFAULT_REDIS_URL, LONG_CHUNK_DELAY_MS, LONG_WORDS
from gateway.bench.procs import BenchError, Proc
from gateway.bench.results import cpu_us_per_request
from gateway.bench.stack import PATH, Stack, chat_load, free_port

NAMES = ("base", "this")
DEFAULT_PHASES = "hit:64,miss:64,miss:16:50"
KINDS = ("hit", "miss", "stream", "long")
WARMUP_S = 2.0  # of cache misses at 16 connections, for each gateway started
PHASE_SHAPE = "hit|miss|stream|long:CONNECTIONS[:LATENCY_MS]"


@dataclass(frozen=True, slots=True)
class Spec:
    """One phase: cache hits, cache misses, streams or long streams (LONG_WORDS words, one
    event every LONG_CHUNK_DELAY_MS); connections; the provider's latency in ms. Streams are
    driven by `gateway.bench.ttft`, and their p50 and p99 are of the time to the first
    token."""

    kind: str
    connections: int
    latency_ms: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.connections}:{self.latency_ms}"


@dataclass(frozen=True, slots=True)
class Sample:
    cpu_us: float
    rps: float
    p50_ms: float
    p99_ms: float


def parse_phases(text: str) -> list[Spec]:
    """`hit:64,miss:16:50` -> phases; raises ValueError with the part it cannot read."""
    specs = []
    for part in (p.strip() for p in text.split(",")):
        fields = part.split(":")
        try:
            if fields[0] not in KINDS or not 2 <= len(fields) <= 3:
                raise ValueError
            numbers = [int(f) for f in fields[1:]]
        except ValueError:
            raise ValueError(f"not a phase ({PHASE_SHAPE}): {part!r}") from None
        if numbers[0] < 1 or min(numbers) < 0:
            raise ValueError(f"not a phase ({PHASE_SHAPE}): {part!r}")
        specs.append(Spec(fields[0], *numbers))
    return specs


def order(pair: int) -> tuple[str, str]:
    """A B, then B A: a drift within a pair falls on both versions alike."""
    return NAMES if pair % 2 == 0 else (NAMES[1], NAMES[0])


@dataclass(frozen=True, slots=True)
class Row:
    """One phase's result: each version's medians, and this one's CPU over base's."""

    phase: str
    pairs: int
    base: dict[str, float]
    this: dict[str, float]
    ratio: float  # the median of the pairs' ratios
    low: float
    high: float
    p50_lower: int = 0  # pairs in which this version's p50 was below base's


def summary(spec: Spec, samples: dict[str, list[Sample]]) -> Row:
    """Medians of each version, and the median and range of this version's CPU over base's,
    pair by pair."""
    ratios = [t.cpu_us / b.cpu_us for b, t in zip(samples["base"], samples["this"], strict=True)]

    def medians(runs: list[Sample]) -> dict[str, float]:
        fields = ("cpu_us", "rps", "p50_ms", "p99_ms")
        return {f: round(statistics.median(getattr(s, f) for s in runs), 2) for f in fields}

    return Row(
        phase=spec.name,
        pairs=len(ratios),
        base=medians(samples["base"]),
        this=medians(samples["this"]),
        ratio=round(statistics.median(ratios), 3),
        low=round(min(ratios), 3),
        high=round(max(ratios), 3),
        p50_lower=sum(
            t.p50_ms < b.p50_ms for b, t in zip(samples["base"], samples["this"], strict=True)
        ),
    )


def markdown(rows: list[Row], base: Path, base_python: str | None = None) -> str:
    on = f" run by `{base_python}`" if base_python else ""
    lines = [
        f"This version against `{base}`{on}: CPU µs per request of each (median of the pairs), "
        "and this one's over base's, pair by pair; the pairs in which this one's p50 was lower "
        "(streams: the time to the first token).",
        "",
        "| Phase | Pairs | Base µs/req | This µs/req | This/base | Range | "
        "Base p50 ms | This p50 ms | This p50 lower | Base req/s | This req/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, t = r.base, r.this
        lines.append(
            f"| {r.phase} | {r.pairs} | {b['cpu_us']:,.0f} | {t['cpu_us']:,.0f} | "
            f"{r.ratio:.3f} | {r.low:.2f} to {r.high:.2f} | {b['p50_ms']:.2f} | "
            f"{t['p50_ms']:.2f} | {r.p50_lower} of {r.pairs} | {b['rps']:,.0f} | {t['rps']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def package_root(path: Path) -> Path:
    """The directory holding `gateway/` (with its cli) in `path`; BenchError when none does."""
    if not (path / "gateway" / "cli.py").is_file():
        raise BenchError(f"{path} holds no gateway/ package (gateway/cli.py)")
    return path.resolve()


def interpreters(base_python: str | None) -> dict[str, str]:
    """Which interpreter runs each version: this one's, unless base is given its own."""
    return {"base": base_python or sys.executable, "this": sys.executable}


class Comparison:
    """Mock, Redis and the two gateways of one run; `measure` runs the phases."""

    def __init__(
        self,
        base: Path,
        workdir: Path,
        redis_url: str,
        pin: bool,
        fresh: bool = True,
        base_python: str | None = None,
    ) -> None:
        self.roots = {"base": package_root(base), "this": Path(gateway.__file__).parent.parent}
        self.pythons = interpreters(base_python)
        self.fresh = fresh  # new gateways for every pair but the first
        self.measured = False  # whether the running gateways have been measured
        self.workdir = workdir
        self.wrk = wrk.ensure_wrk()
        self.cpus = procs.choose_cpus(sorted(os.sched_getaffinity(0)), pin)
        self.store = redis.Redis.from_url(redis_url)
        self.stack = Stack(workdir, self.cpus, redis_url)
        self.ports: dict[str, int] = {}
        self.procs: dict[str, Proc] = {}

    def start(self) -> None:
        procs.pin_self(self.cpus.load)
        self.store.flushdb()
        self.stack.start_mock()
        self.start_gateways()

    def start_gateways(self) -> None:
        """Both versions, each primed with the cached answer hits get and warmed up."""
        config = str(self.stack.config_path())
        for name in NAMES:
            port = self.ports[name] = free_port()
            env = {**os.environ, "PYTHONPATH": str(self.roots[name])}
            argv = self.gateway_argv(name, config, port)
            proc = Proc(name, argv, self.cpus.proxy, self.log(name), env)
            proc.cwd = self.workdir  # outside both checkouts: see the module's docstring
            self.procs[name] = proc
            proc.start()
            proc.wait_ready(f"http://127.0.0.1:{port}/healthz")
            self.stack.gateway_port = port
            self.stack.prime_hit()  # every answer comes from the cache on a fixed prompt
        for name in NAMES:  # connection pools and the interpreter's own warm-up
            self._wrk(name, Spec("miss", 16), WARMUP_S)
        self.measured = False

    def gateway_argv(self, name: str, config: str, port: int) -> list[str]:
        serve = ["-m", "gateway.cli", "serve", "--config", config, "--port", str(port)]
        return [self.pythons[name], *serve]

    def stop_gateways(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        self.procs.clear()

    def log(self, name: str) -> Path:
        return self.workdir / f"gateway-{name}.log"

    def stop(self) -> None:
        self.stop_gateways()
        self.stack.stop_all()
        self.store.flushdb()

    def measure(self, spec: Spec, pairs: int, seconds: float) -> dict[str, list[Sample]]:
        samples: dict[str, list[Sample]] = {name: [] for name in NAMES}
        for pair in range(pairs):
            if self.fresh and self.measured:
                self.stop_gateways()
                self.start_gateways()
            self.measured = True
            for name in order(pair):
                proc = self.procs[name]
                before = proc.ticks()
                requests, errors, sample = self._run(name, spec, seconds)
                cpu = cpu_us_per_request(proc.ticks() - before, procs.clock_ticks(), requests)
                if cpu is None or errors:
                    raise BenchError(f"{name} answered no request or errors in {spec.name}")
                samples[name].append(dataclasses.replace(sample, cpu_us=cpu))
        return samples

    def _run(self, name: str, spec: Spec, seconds: float) -> tuple[int, int, Sample]:
        """One run against `name`: requests, errors, and its figures (CPU left at 0)."""
        if spec.kind in ("stream", "long"):
            url = f"http://127.0.0.1:{self.ports[name]}{PATH}"
            long = spec.kind == "long"
            argv = ttft.command(
                url,
                self.stack.auth("gateway"),
                spec.connections,
                spec.latency_ms,
                seconds,
                words=LONG_WORDS if long else 0,
                chunk_delay_ms=LONG_CHUNK_DELAY_MS if long else 0,
            )
            s = ttft.run(argv, seconds)
            requests, p50, p99 = s["requests"], s["ttft_p50_ms"], s["ttft_p99_ms"]
            sample = Sample(0.0, requests / seconds, p50 or 0.0, p99 or 0.0)
            return requests, s["errors"], sample
        result = self._wrk(name, spec, seconds)
        sample = Sample(0.0, result.rps, result.p50_ms, result.p99_ms)
        return result.requests, result.errors, sample

    def _wrk(self, name: str, spec: Spec, seconds: float) -> wrk.WrkResult:
        argv = chat_load(
            self.wrk,
            f"http://127.0.0.1:{self.ports[name]}",
            self.stack.auth("gateway"),
            latency_ms=spec.latency_ms,
            fixed=spec.kind == "hit",
            conns=spec.connections,
            seconds=seconds,
        )
        return wrk.run_wrk(argv, seconds)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gateway.bench.compare",
        description="This version of the gateway against another, side by side.",
    )
    p.add_argument("--base", required=True, help="a directory holding the other gateway/")
    p.add_argument(
        "--base-python",
        help="the interpreter that runs the other gateway (default: this one's)",
    )
    p.add_argument("--phases", default=DEFAULT_PHASES, help=f"default {DEFAULT_PHASES}")
    p.add_argument("--pairs", type=int, default=10, help="A B pairs per phase (default 10)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run (3)")
    p.add_argument("--out", help="directory for compare.md, compare.json and the logs")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument(
        "--same-processes",
        action="store_true",
        help="keep each version's first gateway for every pair (faster; see the docstring)",
    )
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="a database it may flush")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        phases = parse_phases(args.phases)
    except ValueError as exc:
        parser.error(str(exc))
    if args.pairs < 1 or args.duration <= 0:
        parser.error("--pairs must be at least 1 and --duration above 0")
    if args.base_python and not os.access(args.base_python, os.X_OK):
        parser.error(f"--base-python {args.base_python}: not an executable")
    out = Path(args.out or tempfile.mkdtemp(prefix="gateway-compare-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        run = Comparison(
            Path(args.base),
            out,
            args.redis_url,
            not args.no_pin,
            not args.same_processes,
            args.base_python,
        )
    except BenchError as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    rows: list[Row] = []
    redis_pid = procs.find_process("redis-server")
    try:
        with procs.moved(redis_pid, run.cpus.load, "Redis") as redis_note:
            print(f"[compare] {run.cpus.note}; {redis_note}", file=sys.stderr, flush=True)
            run.start()
            for spec in phases:
                print(f"[compare] {spec.name}: {args.pairs} pairs", file=sys.stderr, flush=True)
                rows.append(summary(spec, run.measure(spec, args.pairs, args.duration)))
    except BenchError as exc:
        print(f"failed: {exc} (logs in {out})", file=sys.stderr)
        return 1
    finally:
        run.stop()
    text = markdown(rows, run.roots["base"], args.base_python)
    (out / "compare.md").write_text(text)
    (out / "compare.json").write_bytes(
        orjson.dumps([dataclasses.asdict(r) for r in rows], option=orjson.OPT_INDENT_2)
    )
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

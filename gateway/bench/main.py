"""Runs the benchmark once and writes its report (Markdown on stdout, files under --out)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from gateway.bench.machine import facts
from gateway.bench.plan import Options
from gateway.bench.procs import BenchError
from gateway.bench.render import markdown, to_json
from gateway.bench.results import Report
from gateway.bench.runner import Run, now_utc, redis_version


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(options: Options, command: str, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    try:
        machine = facts(redis_version(options.redis_url))
        bench = Run(options, out, _say)
    except BenchError as exc:
        _say(f"cannot run: {exc}")
        return 2
    report = Report(
        command=command,
        date=now_utc(),
        machine=machine,
        cpus=bench.cpus.note,
        options=dataclasses.asdict(options),
        notes=NOTES,
    )
    try:
        bench.execute(report)
    except BenchError as exc:
        _say(f"failed: {exc}")
        return 1
    text = markdown(report)
    (out / "report.md").write_text(text)
    (out / "report.json").write_bytes(to_json(report))
    sys.stdout.write(text)
    return 0


NOTES = [
    "CPU µs/req: utime+stime of the process (tree) from /proc over the phase, divided by "
    "the requests wrk completed; Redis CPU is the redis-server process's (shared instance).",
    "Added latency: the phase's percentile minus `direct`'s at the same provider latency and "
    "connections (cache hits: against `direct` at 0 ms). `direct` runs before and after the "
    "proxies; each percentile's baseline is the better of the two runs.",
    "Rounds: the proxies take turns, phase after phase, as many rounds as `--rounds`; each "
    "row gives the median of its runs (CPU range: the lowest and the highest), and `vs "
    "forwarder` the median of each round's ratio (the gateway's CPU over the forwarder's of "
    "the same round, measured seconds apart). `direct` gives its best run, the baseline. "
    "Streams take turns the same way (p50 range: the lowest and the highest of the runs' "
    "times to first token).",
    "Gateway's own p50 / p99: the `overhead_ms` of the phase's answered requests, as the "
    "gateway's request log gives them (its time less the upstream exchange; its store round "
    "trips included), from the log's last 1,000 entries; store p50: the median of their "
    "`store_ms`, the part spent waiting for the store. What the added latency holds beyond "
    "the gateway's own time lies outside its reckoning (the kernel, the machine waking, the "
    "wait before the gateway reads a request that has arrived, and the answer's way back).",
    "Proxy/load core %: how busy each core was; a load core near 100 % means the proxy was not "
    "the bottleneck, and its CPU µs/req is then the figure to compare.",
    "Unattributed CPU %: busy time on all cores that no process of the run was charged for "
    "(the kernel's loopback network work, in softirq, and any other job on the machine), in "
    "percent of one core; hypervisor steal time is left out.",
    "The gateway writes its request log line to /dev/null. Redis cmds/req: the EVALSHA and "
    "EVAL commands the Redis instance received during the phase (the gateway sends scripts "
    "only; the commands they run are not counted), divided by requests; a pipeline sends "
    "several in one round trip.",
]

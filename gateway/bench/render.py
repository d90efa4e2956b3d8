"""The report as Markdown (for docs/performance.md) and as JSON (for machines)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson

from gateway.bench.plan import LONG_CHUNK_DELAY_MS
from gateway.bench.results import PhaseResult, Report
from gateway.bench.targets import check_targets


def _n(value: float | None, digits: int = 0, sign: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:,.{digits}f}"
    return f"+{text}" if sign and value >= 0 else text


def _range(span: tuple[float, float] | None, digits: int = 0) -> str:
    return "-" if span is None else f"{span[0]:,.{digits}f} to {span[1]:,.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(report: Report) -> str:
    lines = [f"Command: `{report.command}`", ""]
    lines += [f"- Date (UTC): {report.date}"]
    lines += [f"- {name}: {value}" for name, value in report.machine.items()]
    lines += [f"- CPUs: {report.cpus}", ""]
    lines += [*_targets(report), "", *_phases(report), ""]
    if report.streams:
        lines += [*_streams(report), ""]
    lines += [*_memory(report), ""]
    if report.workers or report.workers_note:
        lines += [*_workers(report), ""]
    lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines).rstrip() + "\n"


def _targets(report: Report) -> list[str]:
    rows = [[c.name, c.target, c.measured, c.verdict] for c in check_targets(report)]
    return ["### Targets", "", *_table(["What", "Target", "Measured", "Verdict"], rows)]


def _phases(report: Report) -> list[str]:
    header = [
        "Target",
        "Provider",
        "Conns",
        "Req/s",
        "p50 ms",
        "p99 ms",
        "Added p50",
        "Added p99",
        "Gateway's own p50 / p99 (store p50)",
        "Proxy CPU µs/req",
        "CPU range",
        "vs forwarder",
        "Mock CPU µs/req",
        "Redis CPU µs/req",
        "Redis cmds/req",
        "Proxy core %",
        "Load core %",
        "Unattributed CPU %",
        "Errors",
    ]
    rows = [
        [
            p.target,
            f"{p.latency_ms} ms",
            str(p.connections),
            _n(p.rps),
            _n(p.p50_ms, 2),
            _n(p.p99_ms, 2),
            _n(p.added_p50_ms, 2, sign=True),
            _n(p.added_p99_ms, 2, sign=True),
            _own(p),
            _n(p.proxy_cpu_us),
            _range(p.proxy_cpu_range),
            _n(p.cpu_vs_forwarder, 2),
            _n(p.mock_cpu_us),
            _n(p.store_cpu_us),
            _n(p.store_commands, 1),
            _n(p.proxy_core_pct),
            _n(p.load_core_pct),
            _n(p.other_pct),
            str(p.errors),
        ]
        for p in report.phases
    ]
    lines = ["### Requests (wrk)", ""]
    runs = max((p.runs for p in report.phases if p.target != "direct"), default=1)
    if runs > 1:
        lines += [f"Each proxy row is the median of {runs} runs (see the notes).", ""]
    return lines + _table(header, rows)


def _own(p: PhaseResult) -> str:
    """The gateway's own time in ms, as its request log gives it (see gateway.bench.own)."""
    if p.own_p50_ms is None or p.own_p99_ms is None:
        return "-"
    own = f"{p.own_p50_ms:.2f} / {p.own_p99_ms:.2f}"
    if p.own_store_p50_ms is not None:
        own += f" (store {p.own_store_p50_ms:.2f})"
    return own


def _streams(report: Report) -> list[str]:
    header = ["Target", "Answer", "Provider", "Conns", "Streams", "TTFT p50 ms", "p50 range"]
    header += ["TTFT p99 ms", "Added p50", "Added p99", "Proxy CPU µs/stream", "vs forwarder"]
    header += ["Errors"]
    rows = [
        [
            s.target,
            f"{s.words} words, {LONG_CHUNK_DELAY_MS} ms apart" if s.words else "short",
            f"{s.latency_ms} ms",
            str(s.connections),
            str(s.requests),
            _n(s.ttft_p50_ms, 2),
            _range(s.ttft_p50_range, 2),
            _n(s.ttft_p99_ms, 2),
            _n(s.added_ttft_p50_ms, 2, sign=True),
            _n(s.added_ttft_p99_ms, 2, sign=True),
            _n(s.proxy_cpu_us),
            _n(s.cpu_vs_forwarder, 2),
            str(s.errors),
        ]
        for s in report.streams
    ]
    lines = ["### Streaming: time to first token", ""]
    runs = max((s.runs for s in report.streams if s.target != "direct"), default=1)
    if runs > 1:
        lines += [f"Each proxy row is the median of {runs} runs (see the notes).", ""]
    return lines + _table(header, rows)


def _memory(report: Report) -> list[str]:
    rows = [
        [m.process, _n(m.idle_mib, 1), _n(m.end_mib, 1), _n(m.peak_mib, 1)] for m in report.memory
    ]
    lines = ["### Memory (resident)", ""]
    lines += _table(["Process", "Idle MiB", "After the phases MiB", "Peak MiB"], rows)
    soak = report.soak
    if soak is not None:
        lines += [
            "",
            f"Soak: {soak.seconds:.0f} s of cache misses at c16, {soak.rps:,.0f} req/s, "
            f"{soak.errors} errors; gateway resident {soak.start_mib:.1f} MiB at the start, "
            f"{soak.end_mib:.1f} MiB at the end ({_n(soak.growth_mib, 1, sign=True)} MiB "
            "once warm).",
            "",
            "| Seconds | " + " | ".join(f"{t:.0f}" for t, _ in soak.samples_mib) + " |",
            "|---|" + "---|" * len(soak.samples_mib),
            "| MiB | " + " | ".join(f"{m:.1f}" for _, m in soak.samples_mib) + " |",
        ]
    return lines


def _workers(report: Report) -> list[str]:
    lines = ["### Worker processes", ""]
    if report.workers_note:
        lines += [report.workers_note, ""]
    rows = [
        [
            str(w.round + 1),
            str(w.workers),
            _n(w.rps),
            _n(w.p50_ms, 2),
            _n(w.p99_ms, 2),
            _n(w.proxy_cpu_us),
        ]
        for w in report.workers
    ]
    if rows:
        header = ["Round", "Workers", "Req/s", "p50 ms", "p99 ms", "CPU µs/req (all workers)"]
        lines += _table(header, rows)
    return lines


def to_json(report: Report) -> bytes:
    data: dict[str, Any] = dataclasses.asdict(report)
    data["targets"] = [dataclasses.asdict(c) for c in check_targets(report)]
    if report.soak is not None:
        data["soak"]["growth_mib"] = report.soak.growth_mib
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)

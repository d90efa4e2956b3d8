"""The issue's targets, checked against one run's figures (ratios from the same run)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.bench.results import PhaseResult, Report, StreamResult

# A soak is "flat" when the warm process grows by less than this over the run.
FLAT_MIB = 5.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    target: str
    measured: str
    verdict: str  # met | not met | not measured


def _phase(report: Report, target: str, latency: int, conns: int | None) -> PhaseResult | None:
    found = [p for p in report.phases if p.target == target and p.latency_ms == latency]
    if conns is not None:
        found = [p for p in found if p.connections == conns]
    return max(found, key=lambda p: p.connections) if found else None


def _stream(report: Report, target: str) -> StreamResult | None:
    found = [s for s in report.streams if s.target == target]
    return max(found, key=lambda s: s.latency_ms) if found else None


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "not met")


def check_targets(report: Report) -> list[Check]:
    return [
        _cpu_miss(report),
        _cache_hit(report),
        _added_latency(report),
        _ttft(report),
        _throughput(report),
        _workers(report),
        _memory(report),
    ]


def _cpu_miss(report: Report) -> Check:
    p = _phase(report, "gateway-miss", 0, None)
    name, target = "CPU per request, cache miss", "at most 3x the forwarder (aim 2x)"
    if p is None or p.cpu_vs_forwarder is None:
        return Check(name, target, "-", _verdict(None))
    measured = f"{p.cpu_vs_forwarder}x ({p.proxy_cpu_us:.0f} µs, 0 ms, c{p.connections})"
    return Check(name, target, measured, _verdict(p.cpu_vs_forwarder <= 3))


def _cache_hit(report: Report) -> Check:
    hit = _phase(report, "gateway-hit", 0, None)
    name, target = "CPU per request, cache hit", "below the forwarder's pass-through"
    if hit is None or hit.cpu_vs_forwarder is None:
        return Check(name, target, "-", _verdict(None))
    measured = f"{hit.cpu_vs_forwarder}x ({hit.proxy_cpu_us:.0f} µs, c{hit.connections})"
    return Check(name, target, measured, _verdict(hit.cpu_vs_forwarder < 1))


def _added_latency(report: Report) -> Check:
    p = _phase(report, "gateway-miss", 50, 16)
    name, target = "Added latency, 50 ms provider, c16", "p50 < 2 ms, p99 < 10 ms"
    if p is None or p.added_p50_ms is None or p.added_p99_ms is None:
        return Check(name, target, "-", _verdict(None))
    measured = f"p50 {p.added_p50_ms:+.2f} ms, p99 {p.added_p99_ms:+.2f} ms"
    return Check(name, target, measured, _verdict(p.added_p50_ms < 2 and p.added_p99_ms < 10))


def _ttft(report: Report) -> Check:
    s = _stream(report, "gateway")
    name, target = "Streaming time to first token", "adds < 2 ms at p50"
    if s is None or s.added_ttft_p50_ms is None:
        return Check(name, target, "-", _verdict(None))
    measured = f"{s.added_ttft_p50_ms:+.2f} ms p50 ({s.latency_ms} ms provider, c{s.connections})"
    return Check(name, target, measured, _verdict(s.added_ttft_p50_ms < 2))


def _throughput(report: Report) -> Check:
    p = _phase(report, "gateway-miss", 0, None)
    name, target = "Throughput, one worker on one core", "at least 2,000 requests/s"
    if p is None:
        return Check(name, target, "-", _verdict(None))
    capacity = f", CPU-bound capacity {1e6 / p.proxy_cpu_us:,.0f}/s" if p.proxy_cpu_us else ""
    # An absolute figure: the forwarder's own on the same core says what the machine allows.
    floor = _phase(report, "forwarder", 0, p.connections)
    beside = f"; the forwarder {floor.rps:,.0f}/s" if floor is not None else ""
    measured = f"{p.rps:,.0f}/s at c{p.connections}{capacity}{beside}"
    return Check(name, target, measured, _verdict(p.rps >= 2000))


def _workers(report: Report) -> Check:
    name, target = "--workers 2 scaling", "close to 2x on two cores"
    by = {w.workers: w for w in report.workers}
    if 1 not in by or 2 not in by or not by[1].rps:
        return Check(name, target, report.workers_note or "-", "pending")
    scale = by[2].rps / by[1].rps
    measured = f"{scale:.2f}x ({report.workers_note})"
    if not report.workers_pinned:
        return Check(name, target, measured, "not measurable on this machine")
    return Check(name, target, measured, _verdict(scale >= 1.8))


def _memory(report: Report) -> Check:
    name, target = "Memory per worker", f"< 100 MiB idle; flat (< {FLAT_MIB:g} MiB) under load"
    gw = next((m for m in report.memory if m.process == "gateway"), None)
    if gw is None:
        return Check(name, target, "-", _verdict(None))
    measured = f"idle {gw.idle_mib:.0f} MiB, peak {gw.peak_mib:.0f} MiB"
    ok = gw.idle_mib < 100
    if report.soak is None:
        return Check(name, target, measured + "; no soak run", _verdict(ok) + " (idle only)")
    soak = report.soak
    measured += f"; soak {soak.seconds:.0f} s: {soak.start_mib:.0f} → {soak.end_mib:.0f} MiB"
    return Check(name, target, measured, _verdict(ok and soak.growth_mib < FLAT_MIB))

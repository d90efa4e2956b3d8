"""The soak: steady cache-miss load on the gateway for a while, its memory sampled throughout."""

from __future__ import annotations

import subprocess
import time
from typing import TYPE_CHECKING

from gateway.bench import wrk
from gateway.bench.procs import BenchError
from gateway.bench.results import SoakResult

if TYPE_CHECKING:
    from gateway.bench.runner import Run

SAMPLES = 24  # memory readings over the run (at least one a second)


def soak(run: Run, seconds: float) -> SoakResult:
    gateway = run.stack.procs["gateway"]
    argv = run.wrk_command("gateway-miss", 0, 16, seconds)
    interval = max(1.0, seconds / SAMPLES)
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    load = subprocess.Popen(  # noqa: S603 - wrk, with our own arguments
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        while load.poll() is None:
            samples.append((time.monotonic() - started, gateway.memory_kib()[0] / 1024))
            time.sleep(interval)
        out, err = load.communicate()
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    samples.append((time.monotonic() - started, gateway.memory_kib()[0] / 1024))
    if load.returncode != 0:
        raise BenchError(f"wrk failed during the soak: {err[-2000:]}")
    result = wrk.parse_wrk(out)
    return SoakResult(
        seconds=seconds,
        rps=result.rps,
        errors=result.errors,
        samples_mib=[(round(t, 1), round(m, 1)) for t, m in samples],
    )

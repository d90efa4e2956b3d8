"""Facts about the machine and software a run was measured on."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path


def cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def facts(redis_version: str) -> dict[str, str]:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    packages = ("aiohttp", "uvloop", "orjson", "redis", "hiredis", "prometheus-client")
    return {
        "nproc": str(os.cpu_count()),
        "CPU model": cpu_model(cpuinfo),
        "Kernel": platform.release(),
        "Python": platform.python_version(),
        "Packages": ", ".join(f"{p} {_version(p)}" for p in packages),
        "Redis": redis_version,
        "Load average before the run": load,
    }


def round_trips_ms(ping: Callable[[], object], pause: Callable[[float], object]) -> str:
    """A store round trip (`ping`) back to back, and after the machine sat idle for as long
    as the benchmark's slow provider takes (IDLE_S): the median of each, in ms. On a virtual
    machine whose idle CPUs halt, waking them costs more than the round trip itself, and a
    cache miss behind a slow provider makes two such round trips after idle waits: this is
    what the added latency there depends on besides the gateway's own work."""
    ping()  # connected
    warm = [_timed(ping) for _ in range(WARM_PINGS)]
    idle = []
    for _ in range(IDLE_PINGS):
        pause(IDLE_S)
        idle.append(_timed(ping))
    return (
        f"{statistics.median(warm) * 1000:.2f} ms back to back, "
        f"{statistics.median(idle) * 1000:.2f} ms after {IDLE_S * 1000:.0f} ms idle"
    )


WARM_PINGS = 200
IDLE_PINGS = 40
IDLE_S = 0.05


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start

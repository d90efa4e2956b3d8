"""Facts about the machine and software a run was measured on."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import sysconfig
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
        "Python": interpreter(
            sys.executable, _maps(), sysconfig.get_config_var("CONFIG_ARGS") or ""
        ),
        "Packages": ", ".join(f"{p} {_version(p)}" for p in packages),
        "Redis": redis_version,
        "Load average before the run": load,
    }


def _maps() -> str:
    try:
        return Path("/proc/self/maps").read_text()
    except OSError:
        return ""


def interpreter(executable: str, maps: str, config_args: str) -> str:
    """Which CPython build runs the benchmark's processes (they all run `executable`). One
    configured without `--enable-optimizations` and loading libpython as a shared library
    runs pure Python about 1.4x slower than a distribution's build, and the gateway about
    1.1x the CPU per request (docs/performance.md, "The interpreter")."""
    shared = sorted({line.rsplit("/", 1)[-1] for line in maps.splitlines() if "/libpython" in line})
    parts = [
        f"libpython a shared library ({', '.join(shared)})" if shared else "libpython linked in"
    ]
    flags = [flag for flag in ("--enable-optimizations", "--with-lto") if flag in config_args]
    if flags:
        parts.append(f"configured with {' and '.join(flags)}")
    return f"{platform.python_version()} ({os.path.realpath(executable)}; {'; '.join(parts)})"


def python_speed_ms(rounds: int = 5) -> str:
    """The best of `rounds` times of a fixed piece of pure Python (dict updates, string
    formatting, small objects): the interpreter and the CPU together, in one figure that
    runs can be compared by. The cycle collector is off meanwhile: its passes would time this
    process's own objects, whose number says nothing of the machine."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        best = min(_timed(_python_work) for _ in range(rounds))
    finally:
        if collecting:
            gc.enable()
    return f"{best * 1000:.0f} ms for a fixed piece of pure Python (best of {rounds})"


def _python_work() -> None:
    counts: dict[int, int] = {}
    for i in range(200_000):
        counts[i % 97] = counts.get(i % 97, 0) + len(str(i))
        _Point(i, counts[i % 97])


class _Point:
    __slots__ = ("x", "y")

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


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

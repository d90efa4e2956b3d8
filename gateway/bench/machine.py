"""Facts about the machine and software a run was measured on."""

from __future__ import annotations

import os
import platform
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

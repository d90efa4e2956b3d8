"""Driving `wrk`: installing it when missing, its command line, and reading its summary."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import orjson

from gateway.bench.procs import BenchError

_SUMMARY = re.compile(r"^BENCH_JSON (\{.*\})\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run. Latencies in milliseconds; `errors` counts socket errors and non-2xx."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: int
    non_2xx: int


def parse_wrk(output: str) -> WrkResult:
    """Read the summary line our Lua `done()` prints (wrk's own text only for cross-checks)."""
    found = _SUMMARY.search(output)
    if found is None:
        raise BenchError(f"wrk printed no summary line:\n{output[-2000:]}")
    s = orjson.loads(found.group(1))
    duration_s = s["duration_us"] / 1e6
    socket_errors = s["connect"] + s["read"] + s["write"] + s["timeout"]
    return WrkResult(
        requests=s["requests"],
        duration_s=duration_s,
        rps=round(s["requests"] / duration_s, 1) if duration_s > 0 else 0.0,
        p50_ms=s["p50_us"] / 1000,
        p90_ms=s["p90_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        p999_ms=s["p999_us"] / 1000,
        max_ms=s["max_us"] / 1000,
        errors=socket_errors + s["status"],
        non_2xx=s["status"],
    )


def wrk_rps(output: str) -> float | None:
    """wrk's own Requests/sec line."""
    found = _RPS.search(output)
    return float(found.group(1)) if found else None


def script_path() -> Path:
    """The Lua script shipped with the package (a real file: wrk reads it by path)."""
    return Path(str(resources.files("gateway.bench").joinpath("lua", "requests.lua")))


def wrk_argv(
    wrk: str,
    url: str,
    *,
    connections: int,
    duration_s: float,
    script: Path,
    script_args: Sequence[str],
) -> list[str]:
    """One thread (the load core is shared with the mock), latency up to 10 s recorded."""
    return [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        *script_args,
    ]


def run_wrk(argv: Sequence[str], seconds: float) -> WrkResult:
    """Run wrk to its end (it stops itself after `seconds`) and read its summary."""
    out = subprocess.run(  # noqa: S603 - wrk, with our own arguments
        list(argv), capture_output=True, text=True, check=False, timeout=seconds + 60
    )
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr[-2000:]}")
    return parse_wrk(out.stdout)


def ensure_wrk() -> str:
    """The wrk binary; installed with apt-get (Debian package `wrk`) when missing, as root."""
    found = shutil.which("wrk")
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError("wrk is not installed: `apt-get install wrk` (as root), then rerun")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)  # noqa: S603
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return found

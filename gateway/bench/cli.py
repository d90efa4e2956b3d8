"""`python -m gateway.bench`: parses the options and delegates to one run."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gateway.bench.plan import DEFAULT_REDIS_URL, QUICK, Options


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"need one or more non-negative integers: {text}")
    return values


def _rounds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"need at least one round: {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gateway.bench",
        description="Gateway overhead against a bare aiohttp forwarder and the provider itself.",
    )
    p.add_argument("--out", help="directory for report.md, report.json and the process logs")
    p.add_argument("--quick", action="store_true", help="short phases, c16 only (a smoke run)")
    p.add_argument("--duration", type=float, help="seconds per wrk phase (default 10)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per target (default 2)")
    p.add_argument("--connections", type=_ints, help="wrk connections (default 1,16,64)")
    p.add_argument("--latencies", type=_ints, help="provider latencies in ms (default 0,50)")
    p.add_argument(
        "--rounds", type=_rounds, help="runs of each proxy phase, the median reported (default 3)"
    )
    p.add_argument("--stream-duration", type=float, help="seconds per streaming phase")
    p.add_argument(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="then SECONDS of steady load, the gateway's memory sampled (e.g. 600)",
    )
    p.add_argument("--no-workers", action="store_true", help="skip the --workers phase")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help="a Redis database the run may flush (default: database 12)",
    )
    return p


def options_from(argv: Sequence[str]) -> Options:
    args = _parser().parse_args(argv)
    base = QUICK if args.quick else Options()
    changes: dict[str, object] = {
        "out": args.out,
        "soak_s": args.soak,
        "workers": not args.no_workers,
        "pin": not args.no_pin,
        "redis_url": args.redis_url,
    }
    for name, value in (
        ("duration_s", args.duration),
        ("warmup_s", args.warmup),
        ("connections", args.connections),
        ("latencies_ms", args.latencies),
        ("stream_duration_s", args.stream_duration),
        ("rounds", args.rounds),
    ):
        if value is not None:
            changes[name] = value
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = options_from(argv)
    from gateway.bench.main import run  # the run needs wrk, Redis and /proc; parsing does not

    command = shlex.join(["python", "-m", "gateway.bench", *argv])
    if options.out is not None:
        return run(options, command, Path(options.out))
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        return run(options, command, Path(tmp))

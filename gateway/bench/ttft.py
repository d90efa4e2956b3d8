"""Time to first token: a small asyncio client streaming through N connections for a while.

`python -m gateway.bench.ttft --url URL --auth "Bearer K" --connections 16 --duration 10`
prints one JSON line: requests, errors, and p50/p90/p99 of the time to the first body chunk
and of the whole stream, in milliseconds. wrk cannot measure this: it times whole answers.
`--words N --chunk-delay-ms D` asks the mock for a long answer, N words trickled one event
every D ms, as a provider streams tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import orjson

from gateway.bench.procs import BenchError


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of `values` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(firsts: Sequence[float], totals: Sequence[float], errors: int) -> dict[str, object]:
    """Seconds in, milliseconds out."""

    def ms(values: Sequence[float], pct: float) -> float | None:
        found = percentile(values, pct)
        return None if found is None else round(found * 1000, 3)

    return {
        "requests": len(firsts),
        "errors": errors,
        "ttft_p50_ms": ms(firsts, 50),
        "ttft_p90_ms": ms(firsts, 90),
        "ttft_p99_ms": ms(firsts, 99),
        "total_p50_ms": ms(totals, 50),
        "total_p99_ms": ms(totals, 99),
    }


def body(n: int, run_id: str, words: int = 0) -> bytes:
    """A unique prompt each time, so a gateway cache never answers; room for `words`."""
    return orjson.dumps(
        {
            "model": "gpt-4o-mini",
            "temperature": 0,
            "max_tokens": max(64, words),
            "stream": True,
            "messages": [{"role": "user", "content": f"stream {run_id}-{n}: say something"}],
        }
    )


async def _client(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    until: float,
    counter: itertools.count[int],
    make_body: Callable[[int], bytes],
    out: tuple[list[float], list[float], list[int]],
) -> None:
    firsts, totals, errors = out
    while time.perf_counter() < until:
        started = time.perf_counter()
        try:
            async with session.post(url, data=make_body(next(counter)), headers=headers) as r:
                first = await r.content.readany()
                first_at = time.perf_counter()
                async for _ in r.content.iter_any():
                    pass
                if r.status != 200 or not first:
                    errors.append(r.status)
                    continue
        except aiohttp.ClientError:
            errors.append(0)
            continue
        firsts.append(first_at - started)
        totals.append(time.perf_counter() - started)


def long_reply(words: int) -> str:
    """An answer of `words` words, which the mock streams one word per event."""
    return " ".join(f"w{i}" for i in range(words))


async def measure(
    url: str,
    auth: str,
    connections: int,
    duration_s: float,
    latency_ms: int,
    words: int = 0,
    chunk_delay_ms: int = 0,
) -> dict[str, object]:
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    if latency_ms > 0:
        headers["x-mock-latency-ms"] = str(latency_ms)
    if words > 0:
        headers["x-mock-reply"] = long_reply(words)
    if chunk_delay_ms > 0:
        headers["x-mock-chunk-delay-ms"] = str(chunk_delay_ms)
    out: tuple[list[float], list[float], list[int]] = ([], [], [])
    counter = itertools.count()
    run_id = f"{time.time():.0f}"
    make_body = functools.partial(body, run_id=run_id, words=words)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        until = time.perf_counter() + duration_s
        await asyncio.gather(
            *(
                _client(session, url, headers, until, counter, make_body, out)
                for _ in range(connections)
            )
        )
    return summary(out[0], out[1], len(out[2]))


def command(
    url: str,
    auth: str,
    connections: int,
    latency_ms: int,
    duration_s: float,
    words: int = 0,
    chunk_delay_ms: int = 0,
) -> list[str]:
    """This client's command line, run with the current interpreter."""
    argv = [sys.executable, "-m", "gateway.bench.ttft", "--url", url, "--auth", auth]
    argv += ["--connections", str(connections), "--latency-ms", str(latency_ms)]
    if words > 0:
        argv += ["--words", str(words), "--chunk-delay-ms", str(chunk_delay_ms)]
    return [*argv, "--duration", str(duration_s)]


def run(argv: list[str], duration_s: float) -> dict[str, Any]:
    """Run the client; its summary (see `summary`). BenchError when it fails."""
    out = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        argv, capture_output=True, text=True, check=False, timeout=duration_s + 60
    )
    if out.returncode != 0:
        raise BenchError(f"the streaming client failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = orjson.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.ttft")
    parser.add_argument("--url", required=True)
    parser.add_argument("--auth", required=True, help="the Authorization header value")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument(
        "--words", type=int, default=0, help="the answer's words, one event each (0: short)"
    )
    parser.add_argument("--chunk-delay-ms", type=int, default=0, help="between two events")
    args = parser.parse_args(argv)
    import uvloop

    result = uvloop.run(
        measure(
            args.url,
            args.auth,
            args.connections,
            args.duration,
            args.latency_ms,
            args.words,
            args.chunk_delay_ms,
        )
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()

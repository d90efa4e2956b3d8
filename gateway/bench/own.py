"""The gateway's own time in a phase's requests, as it reports it itself.

Every request's admin-log entry carries `overhead_ms`: its time less the upstream exchange
(the log line's field; see docs/observability.md), and `store_ms`, the part of it spent
waiting for the store. Read from the request log in the store after a phase, beside the added
latency the load generator measured, they tell how much of that the gateway's own work and
store round trips account for, and how much lies outside them (the kernel, the machine
waking, the event loop reaching a request that has arrived).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.bench.ttft import percentile
from gateway.requestlog import DEFAULT_SIZE, STREAM_KEY


@dataclass(frozen=True, slots=True)
class Own:
    """`overhead_ms` percentiles of the answered requests (status 200) of one phase, and the
    median of their `store_ms` (None from a gateway that does not report it)."""

    p50_ms: float
    p99_ms: float
    requests: int  # how many entries they were taken from
    store_p50_ms: float | None = None


def own_overhead(store: Any, since: float, until: float) -> Own | None:
    """From the request log's last DEFAULT_SIZE entries (the store keeps about as many), those
    of requests that ended between `since` and `until` (Unix seconds, this machine's clock)
    with status 200; None when there are none. `store`: a synchronous redis-py client on
    the gateway's store."""
    values, waits = [], []
    for _, fields in store.xrevrange(STREAM_KEY, count=DEFAULT_SIZE):
        entry = orjson.loads(fields[b"j"])
        overhead, wait = entry.get("overhead_ms"), entry.get("store_ms")
        if entry.get("status") == 200 and overhead is not None and since <= entry["time"] <= until:
            values.append(float(overhead))
            if wait is not None:
                waits.append(float(wait))
    p50, p99 = percentile(values, 50), percentile(values, 99)
    if p50 is None or p99 is None:
        return None
    return Own(p50, p99, len(values), percentile(waits, 50))

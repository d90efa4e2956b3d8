"""Redis unreachable at start, and frozen for 10 seconds under load: no request hangs, every
request ends and is logged, spend is recorded, the process returns to its baseline."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from gateway.accounting import local_periods
from gateway.store import open_store
from gateway.store.accounting import Accounting
from tests.conftest import KEY_A, base_config, sha
from tests.processes import GatewayProcess, free_port, redis_process, write_config

Client = TestClient[Any, Any]
BUDGETED, FREE = "gk-outage-budgeted", "gk-outage-free"
KEYS = [
    {
        "name": "budgeted",
        "key_sha256": sha(BUDGETED),
        "routes": ["*"],
        "budget": {"usd_per_month": 1000},
    },
    {"name": "free", "key_sha256": sha(FREE), "routes": ["*"]},
]
CHAT = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
FROZEN_S = 10.0
# Longest any request may take while the store is down: a store command is cut at 1 s.
MOST_S = 2.5


async def test_gateway_starts_with_the_store_down_serves_and_reports_degraded(
    make_gateway: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await make_gateway(storage={"url": f"redis://127.0.0.1:{free_port()}/0"}, keys=KEYS)
    assert (await gateway.get("/healthz")).status == 200
    ready = await gateway.get("/readyz")
    assert ready.status == 503
    body = await ready.json()
    assert body["status"] == "degraded"
    assert body["store"].startswith("unreachable (")
    started = time.monotonic()
    free = await gateway.post("/v1/chat/completions", json=CHAT, headers=_auth(FREE))
    budgeted = await gateway.post("/v1/chat/completions", json=CHAT, headers=_auth(BUDGETED))
    assert free.status == 200  # no budget: the store is not needed to serve it
    assert budgeted.status == 503
    assert (await budgeted.json())["error"]["code"] == "budget_store_unavailable"
    assert time.monotonic() - started < MOST_S
    for _ in range(3):  # the breaker is open now: the reason says so
        await gateway.post("/v1/chat/completions", json=CHAT, headers=_auth(BUDGETED))
    body = await (await gateway.get("/readyz")).json()
    assert "circuit open" in body["store"]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Load:
    """Concurrent clients sending requests until stopped; every request's result is kept."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.clients = url, clients
        self.results: list[tuple[str, str, int, str | None, float]] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._client(session, i) for i in range(self.clients)))

    def stop(self) -> None:
        self._stop.set()

    async def _client(self, session: aiohttp.ClientSession, index: int) -> None:
        key = BUDGETED if index % 2 else FREE
        while not self._stop.is_set():
            request_id = uuid.uuid4().hex
            started = time.monotonic()
            headers = {**_auth(key), "x-request-id": request_id}
            async with session.post(
                f"{self.url}/v1/chat/completions", json=CHAT, headers=headers
            ) as resp:
                body = await resp.json()
                code = body["error"]["code"] if resp.status != 200 else None
                self.results.append(
                    (request_id, key, resp.status, code, time.monotonic() - started)
                )
            await asyncio.sleep(0.02)


async def _spent(store_url: str) -> int:
    store = open_store(store_url)
    try:
        month = local_periods()[1]
        (spent,) = await Accounting(store).read([f"spent:k:budgeted:m{month}"])
    finally:
        await store.aclose()
    return spent


async def test_redis_frozen_for_10s_under_load_no_request_hangs_and_spend_is_recorded(
    tmp_path: Path, mock_url: str
) -> None:
    with redis_process(tmp_path) as redis:
        data = base_config(
            mock_url,
            storage={"url": redis.url},
            keys=KEYS,
            routes=[
                {
                    "name": "chat",
                    "match": {"path": "/v1/chat/completions"},
                    "provider": "openai",
                    "cache": {"ttl_s": 60},
                }
            ],
        )
        gateway = GatewayProcess(write_config(tmp_path, data), free_port(), tmp_path / "gw.log")
        try:
            await gateway.ready("/readyz")
            warm = Load(gateway.url, clients=16)
            warming = asyncio.create_task(warm.run())
            await asyncio.sleep(2)
            warm.stop()
            await warming
            fds, rss = gateway.open_fds(), gateway.rss_kib()

            load = Load(gateway.url, clients=16)
            running = asyncio.create_task(load.run())
            await asyncio.sleep(1)
            redis.freeze()
            await asyncio.sleep(1)
            async with aiohttp.ClientSession() as probe:
                asked = time.monotonic()
                async with probe.get(f"{gateway.url}/readyz") as ready:
                    assert ready.status == 503
                    assert (await ready.json())["status"] == "degraded"
                assert time.monotonic() - asked < MOST_S
            await asyncio.sleep(FROZEN_S - 1)
            redis.thaw()
            await asyncio.sleep(3)
            load.stop()
            await running
            async with (
                aiohttp.ClientSession() as probe,
                probe.get(f"{gateway.url}/readyz") as ready,
            ):
                assert ready.status == 200  # the breaker's probe found the store again
            await asyncio.sleep(1)
            after_fds, after_rss = gateway.open_fds(), gateway.rss_kib()
            spent = await _spent(redis.url)
        finally:
            gateway.stop()
    results = load.results
    slowest = max(r[4] for r in results)
    statuses = {(r[1], r[2], r[3]) for r in results}
    logged = gateway.request_lines()
    every = warm.results + results
    budgeted = {r[0] for r in every if r[1] == BUDGETED}
    billed = sum(_micro(logged[r[0]][0]) for r in every if r[0] in budgeted and r[2] == 200)
    not_stored = sum(
        _micro(line)
        for line in gateway.logs()
        if line.get("event") == "spend_not_stored" and line["request_id"] in budgeted
    )
    print(
        f"\nredis frozen {FROZEN_S:g}s under load: {len(results)} requests, "
        f"slowest {slowest:.2f}s, outcomes {sorted(statuses, key=str)}, "
        f"billed {billed} µ$ (not stored {not_stored}), stored {spent}, "
        f"fds {fds}->{after_fds}, rss {rss}->{after_rss} KiB"
    )
    assert slowest < MOST_S
    assert statuses <= {
        (FREE, 200, None),
        (BUDGETED, 200, None),
        (BUDGETED, 503, "budget_store_unavailable"),
    }
    assert (BUDGETED, 503, "budget_store_unavailable") in statuses  # the outage was seen
    assert all(len(logged.get(r[0], [])) == 1 for r in every)
    # Every answer's cost is in the store or, when the store failed, in a log line; the
    # store never holds more than was billed.
    assert billed - not_stored <= spent <= billed
    assert after_fds <= fds + 10
    assert after_rss <= rss + 30_000


def _micro(line: dict[str, Any]) -> int:
    return round(float(line["cost_usd"] or 0) * 1_000_000)


async def test_key_without_budget_is_served_while_the_store_is_refused(
    make_gateway: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await make_gateway(storage={"url": f"redis://127.0.0.1:{free_port()}/0"})
    started = time.monotonic()
    for _ in range(10):
        resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=_auth(KEY_A))
        assert resp.status == 200
    assert time.monotonic() - started < MOST_S

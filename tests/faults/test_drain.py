"""SIGTERM: /readyz turns 503 at once, no new request is taken, requests in flight finish up
to the drain timeout (streams past it end with an error event), every request is settled and
logged, and the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.accounting import local_periods
from gateway.mock import MockState
from gateway.store import open_store
from gateway.store.accounting import Accounting
from tests.conftest import base_config, sha
from tests.processes import GatewayProcess, free_port, write_config

KEY = "gk-drain-budgeted"
WORDS = " ".join(f"w{i}" for i in range(20))


def _config(mock_url: str, store_url: str, drain_s: float) -> dict[str, Any]:
    return base_config(
        mock_url,
        storage={"url": store_url},
        server={"drain_timeout_s": drain_s},
        keys=[
            {
                "name": "budgeted",
                "key_sha256": sha(KEY),
                "routes": ["*"],
                "budget": {"usd_per_month": 100},
            }
        ],
    )


@pytest.fixture
async def start(tmp_path: Path, mock_url: str, redis_url: str) -> Any:
    started: list[GatewayProcess] = []

    async def make(drain_s: float) -> GatewayProcess:
        config = write_config(tmp_path, _config(mock_url, redis_url, drain_s))
        gateway = GatewayProcess(config, free_port(), tmp_path / "gateway.log")
        started.append(gateway)
        await gateway.ready()
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


async def _chat(
    session: aiohttp.ClientSession, url: str, request_id: str, stream: bool, **mock: str
) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Authorization": f"Bearer {KEY}", "x-request-id": request_id, **mock}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(
        f"{url}/v1/chat/completions", json={**body, "stream": stream}, headers=headers
    ) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def _in_flight_upstream(mock: MockState, count: int) -> None:
    while len(mock.requests) < count:
        await asyncio.sleep(0.01)


async def _store_totals(store_url: str) -> tuple[int, int]:
    """Spent and held (open reservations) this month for the budgeted key."""
    store = open_store(store_url)
    try:
        month = local_periods()[1]
        spent, held = await Accounting(store).read(
            [f"spent:k:budgeted:m{month}", f"held:k:budgeted:m{month}"]
        )
    finally:
        await store.aclose()
    return spent, held


def _micro(cost_usd: str | None) -> int:
    return round(float(cost_usd or 0) * 1_000_000)


async def test_sigterm_lets_requests_in_flight_finish_settles_them_and_exits_0(
    start: Any, mock: MockState, redis_url: str
) -> None:
    gateway: GatewayProcess = await start(drain_s=10)
    slow_stream = {"x-mock-reply": WORDS, "x-mock-chunk-delay-ms": "60"}
    async with aiohttp.ClientSession() as clients, aiohttp.ClientSession() as prober:
        async with prober.get(f"{gateway.url}/healthz") as warm:  # a kept-alive connection
            assert warm.status == 200
        flights = [
            asyncio.create_task(_chat(clients, gateway.url, "s1", True, **slow_stream)),
            asyncio.create_task(_chat(clients, gateway.url, "s2", True, **slow_stream)),
            asyncio.create_task(
                _chat(clients, gateway.url, "b1", False, **{"x-mock-latency-ms": "800"})
            ),
        ]
        await _in_flight_upstream(mock, 3)
        gateway.signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        async with prober.get(f"{gateway.url}/readyz") as ready:
            assert ready.status == 503
            assert await ready.json() == {"status": "draining"}
            assert ready.headers["Connection"] == "close"  # and the connection is not reused
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as late:
                await late.get(f"{gateway.url}/healthz")
        results = await asyncio.gather(*flights)
    for status, body, _ in results[:2]:
        assert status == 200
        assert body.endswith(b"data: [DONE]\n\n")
        assert b"shutting_down" not in body
    assert results[2][0] == 200
    assert await gateway.exit_code(timeout_s=10) == 0
    lines = gateway.request_lines()
    assert {rid: len(found) for rid, found in lines.items()} == {"s1": 1, "s2": 1, "b1": 1}
    assert all(found[0]["outcome"] == "ok" for found in lines.values())
    spent, held = await _store_totals(redis_url)
    assert held == 0
    assert spent == sum(_micro(found[0]["cost_usd"]) for found in lines.values()) > 0


async def test_streams_past_the_drain_timeout_end_with_an_error_event_and_are_billed(
    start: Any, mock: MockState, redis_url: str
) -> None:
    gateway: GatewayProcess = await start(drain_s=1)
    endless = {"x-mock-reply": WORDS, "x-mock-chunk-delay-ms": "400"}
    async with aiohttp.ClientSession() as clients:
        stream = asyncio.create_task(_chat(clients, gateway.url, "long", True, **endless))
        slow = asyncio.create_task(
            _chat(clients, gateway.url, "slow", False, **{"x-mock-latency-ms": "20000"})
        )
        await _in_flight_upstream(mock, 2)
        await asyncio.sleep(0.5)  # the stream's first events have been relayed
        signalled = time.monotonic()
        gateway.signal(signal.SIGTERM)
        (s_status, s_body, _), (b_status, b_body, b_headers) = await asyncio.gather(stream, slow)
        assert time.monotonic() - signalled < 4
    assert s_status == 200
    events = [e for e in s_body.split(b"\n\n") if e.strip()]
    assert b"[DONE]" not in s_body
    assert orjson.loads(events[-1].removeprefix(b"data: "))["error"]["code"] == "shutting_down"
    assert b_status == 503
    assert orjson.loads(b_body)["error"]["code"] == "shutting_down"
    assert b_headers["x-should-retry"] == "true"
    assert b_headers["Connection"] == "close"
    assert await gateway.exit_code(timeout_s=8) == 0
    lines = gateway.request_lines()
    assert lines["long"][0]["outcome"] == "stream_interrupted"
    assert lines["long"][0]["cost_source"] == "estimate"
    assert lines["slow"][0]["outcome"] == "shutdown"
    assert lines["slow"][0]["cost_source"] == "reserved"  # the provider may bill it
    spent, held = await _store_totals(redis_url)
    assert held == 0
    assert spent == sum(_micro(found[0]["cost_usd"]) for found in lines.values())


async def test_a_second_sigterm_cuts_at_once_settles_everything_and_says_why(
    start: Any, mock: MockState, redis_url: str
) -> None:
    gateway: GatewayProcess = await start(drain_s=60)
    endless = {"x-mock-reply": WORDS, "x-mock-chunk-delay-ms": "400"}
    async with aiohttp.ClientSession() as clients:
        stream = asyncio.create_task(_chat(clients, gateway.url, "long", True, **endless))
        await _in_flight_upstream(mock, 1)
        await asyncio.sleep(0.5)  # the stream's first events have been relayed
        gateway.signal(signal.SIGTERM)
        while not any(x.get("event") == "draining" for x in gateway.logs()):
            await asyncio.sleep(0.02)
        gateway.signal(signal.SIGTERM)
        status, body, _ = await stream
    assert status == 200
    events = [e for e in body.split(b"\n\n") if e.strip()]
    assert orjson.loads(events[-1].removeprefix(b"data: "))["error"]["code"] == "shutting_down"
    assert await gateway.exit_code(timeout_s=8) == 0
    events_logged = [x["event"] for x in gateway.logs()]
    assert "drain_hurried" in events_logged
    assert "drain_timeout" not in events_logged  # 60 s were not over
    lines = gateway.request_lines()
    assert lines["long"][0]["outcome"] == "stream_interrupted"
    spent, held = await _store_totals(redis_url)
    assert (spent, held) == (_micro(lines["long"][0]["cost_usd"]), 0)

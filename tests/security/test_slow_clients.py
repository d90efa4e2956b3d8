"""Slow clients: 500 connections trickling their headers are closed at the header deadline
while normal traffic keeps its latency, and a long legitimate stream is not cut. (Times are
scaled down: a 1 s header deadline, a 2 s keep-alive, a stream of about 5 s.)"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import KEY_A, base_config
from tests.processes import GatewayProcess, free_port, write_config

SLOW_CLIENTS = 500
HEADER_S, KEEPALIVE_S = 1.0, 2.0
AUTH = {"Authorization": f"Bearer {KEY_A}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
WORDS = " ".join(f"w{i}" for i in range(24))


async def _slowloris(port: int) -> float:
    """Trickle header lines until the gateway hangs up; how long the connection lived."""
    opened = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")
    try:
        while time.monotonic() - opened < 30:
            try:
                async with asyncio.timeout(0.3):
                    if not await reader.read(1024):
                        break  # closed by the gateway
            except TimeoutError:
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
    return time.monotonic() - opened


async def _latencies(url: str, count: int) -> list[float]:
    found = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.monotonic()
            async with session.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH) as resp:
                assert resp.status == 200
                await resp.read()
            found.append(time.monotonic() - started)
    return found


async def _long_stream(url: str) -> tuple[bytes, float]:
    headers = {**AUTH, "x-mock-reply": WORDS, "x-mock-chunk-delay-ms": "200"}
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
        ) as resp,
    ):
        assert resp.status == 200
        return await resp.read(), time.monotonic() - started


async def test_slowloris_connections_are_closed_while_traffic_and_a_long_stream_go_on(
    tmp_path: Path, mock_url: str
) -> None:
    server = {"header_timeout_s": HEADER_S, "keepalive_timeout_s": KEEPALIVE_S}
    config = write_config(tmp_path, base_config(mock_url, server=server))
    port = free_port()
    gateway = GatewayProcess(config, port, tmp_path / "gateway.log")
    # The timings are the gateway's: a collection of this test process's own garbage (large
    # after a thousand tests) stalls its clients and its mock for up to a second, which
    # looked like a request held by the slow connections.
    gc.collect()
    gc.disable()
    try:
        await gateway.ready()
        before = await _latencies(gateway.url, 30)
        stream = asyncio.create_task(_long_stream(gateway.url))
        attack = [asyncio.create_task(_slowloris(port)) for _ in range(SLOW_CLIENTS)]
        await asyncio.sleep(0.5)
        during = await _latencies(gateway.url, 30)
        lifetimes = await asyncio.gather(*attack)
        body, stream_s = await stream
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{gateway.url}/metrics") as resp,
        ):
            metrics = await resp.text()
    finally:
        gc.enable()
        gateway.stop()
    closed = sum(
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "llm_gateway_slow_connections_closed_total"
    )
    p50_before, p50_during = statistics.median(before), statistics.median(during)
    print(
        f"\n{SLOW_CLIENTS} slowloris connections: closed after {min(lifetimes):.2f}-"
        f"{max(lifetimes):.2f}s (deadline {HEADER_S:g}s); normal latency p50 "
        f"{p50_before * 1000:.1f}ms before, {p50_during * 1000:.1f}ms during "
        f"(max {max(during) * 1000:.1f}ms); stream of {stream_s:.1f}s complete"
    )
    assert closed >= SLOW_CLIENTS
    assert max(lifetimes) < KEEPALIVE_S - 0.25  # the header deadline closed them, not keep-alive
    assert min(lifetimes) >= HEADER_S - 0.05
    assert p50_during < p50_before + 0.1
    assert max(during) < 1.0
    assert stream_s > KEEPALIVE_S + 2 * HEADER_S  # outlived every connection deadline
    assert body.endswith(b"data: [DONE]\n\n")
    assert b'"error"' not in body

"""Two gateway processes sharing PROMETHEUS_MULTIPROC_DIR: /metrics on either shows the sum."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import KEY_A, base_config
from tests.processes import free_port

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def workers(tmp_path: Path, mock_url: str) -> Iterator[list[str]]:
    """Two `gateway serve` processes, one metrics directory."""
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(base_config(mock_url)))
    directory = tmp_path / "prom"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    ports = [free_port(), free_port()]
    log = (tmp_path / "workers.log").open("wb")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(p)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        for p in ports
    ]
    yield [f"http://127.0.0.1:{p}" for p in ports]
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=10)
    log.close()


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):
        try:
            async with session.get(f"{url}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not start")


def requests_total(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "llm_gateway_requests_total" and s.labels.get("status") == "200"
    )


async def scraped_total(session: aiohttp.ClientSession, url: str, want: float = 5) -> float:
    """The summed counter once it reaches `want` (a request is counted a moment after its
    answer is sent), or what it is after 5 s."""
    total = 0.0
    for _ in range(100):
        async with session.get(f"{url}/metrics") as resp:
            total = requests_total(await resp.text())
        if total >= want:
            break
        await asyncio.sleep(0.05)
    return total


async def test_two_processes_writing_one_directory_are_summed_on_scrape(
    workers: list[str],
) -> None:
    headers = {"Authorization": f"Bearer {KEY_A}"}
    async with aiohttp.ClientSession() as session:
        for url in workers:
            await wait_ready(session, url)
        for url, count in zip(workers, (3, 2), strict=True):
            for _ in range(count):
                async with session.post(
                    f"{url}/v1/chat/completions", json=CHAT, headers=headers
                ) as resp:
                    assert resp.status == 200
        for url in workers:
            assert await scraped_total(session, url) == 5

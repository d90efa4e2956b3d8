"""Two gateway processes sharing PROMETHEUS_MULTIPROC_DIR: /metrics on either shows the sum."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.exposition import SYNC_INTERVAL_S
from tests.conftest import KEY_A, base_config
from tests.processes import GatewayProcess, free_port, write_config

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def budgeted(mock_url: str, **budget: float) -> dict[str, Any]:
    data = base_config(mock_url)
    data["keys"][0]["budget"] = budget
    return data


@pytest.fixture
def workers(tmp_path: Path, mock_url: str) -> Iterator[list[GatewayProcess]]:
    """Two `gateway serve` processes, one metrics directory."""
    config = write_config(tmp_path, budgeted(mock_url, usd_per_day=5, usd_per_month=50))
    directory = tmp_path / "prom"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    procs = [
        GatewayProcess(config, free_port(), tmp_path / f"worker{i}.log", env=env) for i in (1, 2)
    ]
    yield procs
    for proc in procs:
        proc.stop()


def requests_total(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "llm_gateway_requests_total" and s.labels.get("status") == "200"
    )


async def scraped_total(session: aiohttp.ClientSession, url: str, want: float = 5) -> float:
    """The summed counter once it reaches `want`, or what it is after 20 s. A worker writes
    its counters to its file every SYNC_INTERVAL_S, so the other worker's show up within it."""
    deadline = time.monotonic() + SYNC_INTERVAL_S * 4
    while True:
        async with session.get(f"{url}/metrics") as resp:
            total = requests_total(await resp.text())
        if total >= want or time.monotonic() > deadline:
            return total
        await asyncio.sleep(0.05)


async def test_two_processes_writing_one_directory_are_summed_on_scrape(
    workers: list[GatewayProcess],
) -> None:
    headers = {"Authorization": f"Bearer {KEY_A}"}
    for worker in workers:
        await worker.ready()
    urls = [worker.url for worker in workers]
    async with aiohttp.ClientSession() as session:
        for url, count in zip(urls, (3, 2), strict=True):
            for _ in range(count):
                async with session.post(
                    f"{url}/v1/chat/completions", json=CHAT, headers=headers
                ) as resp:
                    assert resp.status == 200
        for url in urls:
            assert await scraped_total(session, url) == 5


def budget_periods(text: str) -> set[str]:
    """The periods of team-a's budget limits on a scrape."""
    return {
        s.labels["period"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "llm_gateway_budget_limit_usd" and s.labels["key"] == "team-a"
    }


async def test_a_budget_removed_by_a_reload_leaves_every_workers_scrape(
    workers: list[GatewayProcess], tmp_path: Path, mock_url: str
) -> None:
    for worker in workers:
        await worker.ready()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{workers[0].url}/metrics") as resp:
            assert budget_periods(await resp.text()) == {"day", "month"}
        write_config(tmp_path, budgeted(mock_url, usd_per_month=50))
        for worker in workers:  # as the supervisor passes a SIGHUP on
            worker.signal(signal.SIGHUP)
        for worker in workers:
            for _ in range(100):
                async with session.get(f"{worker.url}/metrics") as resp:
                    periods = budget_periods(await resp.text())
                if periods == {"month"}:
                    break
                await asyncio.sleep(0.05)
            assert periods == {"month"}, worker.url

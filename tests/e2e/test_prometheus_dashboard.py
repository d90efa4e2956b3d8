"""A real Prometheus scrapes a real gateway; every Grafana panel query runs against it."""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.conftest import KEY_A, sha
from tests.processes import free_port
from tests.system_packages import require_binary

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana/dashboards/llm-gateway.json"
# Panels whose query may rightly find nothing in this traffic: a healthy store fails nothing.
MAY_BE_EMPTY = {"Redis errors"}
AUTH = {"Authorization": f"Bearer {KEY_A}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
FEATURES: dict[str, Any] = {
    "routes": [
        {
            "name": "chat",
            "match": {"path": "/v1/chat/completions", "model": "gpt-4o*"},
            "provider": "openai",
            "cache": {"ttl_s": 60},
            "retry": {"attempts": 2, "base_s": 0.01},
            "fallbacks": [{"provider": "openai", "model": "gpt-4.1-mini"}],
        },
        {"name": "openai", "match": {"path": "/v1/*"}, "provider": "openai"},
    ],
    "keys": [
        {
            "name": "team-a",
            "key_sha256": sha(KEY_A),
            "routes": ["*"],
            "budget": {"usd_per_month": 100},
        }
    ],
}


@pytest.fixture
async def gateway_url(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    make_config: Callable[..., GatewayConfig],
) -> str:
    server = await aiohttp_server(create_app(make_config(**FEATURES)))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def prometheus(gateway_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """Prometheus on a free loopback port, scraping the gateway every second."""
    binary = require_binary("prometheus", "prometheus")
    target = gateway_url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "llm-gateway", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {proc.returncode}")
            try:
                async with session.get(f"{url}/-/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("prometheus did not become ready")


async def drive_traffic(session: aiohttp.ClientSession, url: str) -> None:
    """Successes, cache hits, streams, retried and fallen-back errors, rejections, anomalies."""
    chat = f"{url}/v1/chat/completions"
    sends: list[tuple[dict[str, Any], dict[str, str]]] = [
        (CHAT, AUTH),
        (CHAT, AUTH),  # a cache hit after the first round
        ({**CHAT, "stream": True, "messages": [{"role": "user", "content": "stream"}]}, AUTH),
        ({**CHAT, "response_format": {"type": "json_object"}}, AUTH),  # not JSON: an anomaly
        (CHAT, {**AUTH, "x-mock-status": "503", "cache-control": "no-store"}),
        (CHAT, {**AUTH, "x-mock-status": "400", "cache-control": "no-store"}),
        (CHAT, {"Authorization": "Bearer gk-not-a-key"}),
    ]
    for body, headers in sends:
        async with session.post(chat, json=body, headers=headers) as resp:
            await resp.read()


async def query(session: aiohttp.ClientSession, prometheus: str, expr: str) -> dict[str, Any]:
    async with session.get(f"{prometheus}/api/v1/query", params={"query": expr}) as resp:
        body: dict[str, Any] = await resp.json()
        return body


def has_finite_value(answer: dict[str, Any]) -> bool:
    data = answer["data"]
    if data["resultType"] == "scalar":
        return math.isfinite(float(data["result"][1]))
    return any(math.isfinite(float(series["value"][1])) for series in data["result"])


def concrete(expr: str) -> str:
    """What Grafana sends with every variable set to All and a 1m rate interval."""
    expr = expr.replace("$__rate_interval", "1m")
    return re.sub(r"\$(route|model|key)\b", ".*", expr)


async def wait_for_scrapes(session: aiohttp.ClientSession, prometheus: str, n: float) -> None:
    """Until Prometheus has seen `n` successful requests (and so every earlier metric)."""
    expr = 'sum(llm_gateway_requests_total{status="200"})'
    for _ in range(100):
        answer = await query(session, prometheus, expr)
        result = answer["data"]["result"]
        if result and float(result[0]["value"][1]) >= n:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"Prometheus never saw {n} successful requests")


async def test_every_panel_query_parses_and_traffic_cost_cache_errors_return_data(
    gateway_url: str, prometheus: str
) -> None:
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    async with aiohttp.ClientSession() as session:
        # Two rounds, a few scrapes apart, so that every rate() sees an increase.
        await drive_traffic(session, gateway_url)
        await wait_for_scrapes(session, prometheus, 4)
        await asyncio.sleep(1.5)
        await drive_traffic(session, gateway_url)
        await wait_for_scrapes(session, prometheus, 8)
        await asyncio.sleep(1.5)
        empty = []
        for panel in panels:
            found = False
            for target in panel["targets"]:
                answer = await query(session, prometheus, concrete(target["expr"]))
                assert answer["status"] == "success", (panel["title"], answer)
                found = found or has_finite_value(answer)
            if not found:
                empty.append(panel["title"])
        for name in ("route", "model", "key"):
            params = {"match[]": "llm_gateway_requests_total"}
            async with session.get(
                f"{prometheus}/api/v1/label/{name}/values", params=params
            ) as resp:
                assert (await resp.json())["data"], name
    assert set(empty) <= MAY_BE_EMPTY, f"panels without data: {empty}"

"""Hot reload (POST /admin/reload, SIGHUP): a valid file is swapped in for new requests, an
invalid one is refused with a log line and a metric, requests in flight keep their config."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import load_config
from gateway.mock import MockState
from gateway.reload import CONFIG_SOURCE, ConfigSource
from gateway.runtime import Runtime
from tests.conftest import KEY_A, base_config, sha
from tests.processes import GatewayProcess, free_port, write_config

Client = TestClient[Any, Any]
ADMIN = "admin-token-reload"
NEW_KEY = "gk-added-by-reload"
CHAT = {"model": "priced-model", "messages": [{"role": "user", "content": "hi"}]}


def _data(mock_url: str, price: float = 1000.0, **overrides: Any) -> dict[str, Any]:
    data = base_config(
        mock_url,
        admin={"token_sha256": sha(ADMIN)},
        pricing={"priced-model": {"input": price, "output": price}},
        **overrides,
    )
    return data


@pytest.fixture
def served(
    tmp_path: Path, mock_url: str, aiohttp_client: Callable[..., Awaitable[Client]]
) -> Callable[..., Awaitable[tuple[Client, Path]]]:
    """A gateway app started from a config file, as `gateway serve` starts it."""

    async def make(**overrides: Any) -> tuple[Client, Path]:
        path = write_config(tmp_path, _data(mock_url, **overrides))
        app = create_app(load_config(path))
        app[CONFIG_SOURCE] = ConfigSource(str(path))
        return await aiohttp_client(app), path

    return make


async def _reload(client: Client) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    return resp.status, await resp.json()


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_reload_serves_a_key_added_to_the_file_and_labels_its_metrics(
    served: Callable[..., Awaitable[tuple[Client, Path]]], mock_url: str
) -> None:
    client, path = await served()
    data = _data(mock_url)
    data["keys"].append({"name": "team-new", "key_sha256": sha(NEW_KEY), "routes": ["*"]})
    write_config(path.parent, data)
    status, body = await _reload(client)
    assert (status, body["status"], body["keys"]) == (200, "reloaded", 3)
    resp = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {NEW_KEY}"}
    )
    assert resp.status == 200
    metrics = await (await client.get("/metrics")).text()
    keys = {dict(labels)["key"] for labels in _samples(metrics, "llm_gateway_requests_total")}
    assert "team-new" in keys  # a name from the new config, not "other"
    reloads = _samples(metrics, "llm_gateway_config_reloads_total")
    assert reloads[(("result", "ok"),)] == 1


@pytest.mark.parametrize(
    ("added", "problem"),
    [
        ("bogus_section: 1\n", "bogus_section: Extra inputs are not permitted"),
        ("? [a, b]\n: 1\n", "found unhashable key"),
        ("deep: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply to read"),
        ("providers: {}\n", "the key 'providers' is written twice"),
    ],
)
async def test_invalid_file_is_refused_with_a_log_line_and_a_metric_and_the_config_stays(
    served: Callable[..., Awaitable[tuple[Client, Path]]], added: str, problem: str
) -> None:
    client, path = await served()
    path.write_text(path.read_text() + "\n" + added)
    with structlog.testing.capture_logs() as logs:
        status, body = await _reload(client)
    assert status == 400
    assert body["error"]["code"] == "invalid_config"
    assert problem in body["error"]["message"]
    failed = [line for line in logs if line["event"] == "config_reload_failed"]
    assert len(failed) == 1
    assert failed[0]["log_level"] == "error"
    assert str(path) in failed[0]["error"]
    resp = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {KEY_A}"}
    )
    assert resp.status == 200
    metrics = await (await client.get("/metrics")).text()
    assert _samples(metrics, "llm_gateway_config_reloads_total")[(("result", "error"),)] == 1


async def test_a_reload_that_fails_on_our_side_is_counted_and_keeps_the_config(
    served: Callable[..., Awaitable[tuple[Client, Path]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the file's fault: a 500 for the admin, but logged, counted and nothing swapped."""
    client, _ = await served()

    def broken(config: Any) -> Any:
        raise RuntimeError("a defect")

    monkeypatch.setattr(Runtime, "build", broken)
    with structlog.testing.capture_logs() as logs:
        status, body = await _reload(client)
    assert (status, body["error"]["type"]) == (500, "api_error")
    assert [line["error"] for line in logs if line["event"] == "config_reload_failed"] == [
        "a defect"
    ]
    resp = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {KEY_A}"}
    )
    assert resp.status == 200
    metrics = await (await client.get("/metrics")).text()
    assert _samples(metrics, "llm_gateway_config_reloads_total")[(("result", "error"),)] == 1


def _budgeted(mock_url: str, **budget: float) -> dict[str, Any]:
    data = _data(mock_url)
    data["keys"][0]["budget"] = budget
    return data


async def test_a_budget_the_reload_removed_leaves_the_budget_gauges_and_alerts(
    served: Callable[..., Awaitable[tuple[Client, Path]]], mock_url: str
) -> None:
    """A dropped budget must not stay on /metrics frozen at its last spend, where the budget
    panel and the 80 % alert would keep reading it until the next restart."""
    client, path = await served(
        keys=_budgeted(mock_url, usd_per_day=100, usd_per_month=500)["keys"]
    )
    auth = {"Authorization": f"Bearer {KEY_A}"}
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth)).status == 200
    day = (("key", "team-a"), ("period", "day"), ("route", ""))
    month = (("key", "team-a"), ("period", "month"), ("route", ""))
    before = await (await client.get("/metrics")).text()
    assert _samples(before, "llm_gateway_budget_spent_usd")[day] > 0
    write_config(path.parent, _budgeted(mock_url, usd_per_month=500))
    assert (await _reload(client))[0] == 200
    after = await (await client.get("/metrics")).text()
    for name in ("llm_gateway_budget_spent_usd", "llm_gateway_budget_limit_usd"):
        assert set(_samples(after, name)) == {month}, name
    assert _samples(after, "llm_gateway_budget_limit_usd")[month] == 500


async def test_request_in_flight_finishes_on_the_config_it_started_with(
    served: Callable[..., Awaitable[tuple[Client, Path]]], mock_url: str, mock: MockState
) -> None:
    client, path = await served(price=1000.0)
    auth = {"Authorization": f"Bearer {KEY_A}"}
    slow = asyncio.create_task(
        client.post("/v1/chat/completions", json=CHAT, headers={**auth, "x-mock-latency-ms": "500"})
    )
    while not mock.requests:
        await asyncio.sleep(0.01)
    write_config(path.parent, _data(mock_url, price=2000.0))
    assert (await _reload(client))[0] == 200
    before = await slow
    after = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
    assert before.status == after.status == 200
    old_cost = float(before.headers["x-gateway-cost-usd"])
    assert float(after.headers["x-gateway-cost-usd"]) == pytest.approx(2 * old_cost)


async def test_settings_applied_at_start_are_reported_on_reload_and_kept(
    served: Callable[..., Awaitable[tuple[Client, Path]]], mock_url: str
) -> None:
    client, path = await served()
    moved = _data(
        mock_url,
        storage={"url": "redis://127.0.0.1:1/0"},
        server={"port": 9999, "max_body_bytes": 10},
    )
    write_config(path.parent, moved)
    with structlog.testing.capture_logs() as logs:
        status, body = await _reload(client)
    assert status == 200
    assert set(body["restart_required"]) == {"storage.url", "server.port", "server.max_body_bytes"}
    warned = [line for line in logs if line["event"] == "config_reload_restart_required"]
    assert warned[0]["fields"] == body["restart_required"]
    assert "127.0.0.1:1" not in str(logs)  # field names only: a storage URL may hold a password
    ready = await client.get("/readyz")
    assert ready.status == 200  # still on the store it started with
    resp = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {KEY_A}"}
    )
    assert resp.status == 200  # the body limit it started with, too


async def test_reload_without_a_config_file_is_refused(
    make_gateway: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_gateway(admin={"token_sha256": sha(ADMIN)})
    status, body = await _reload(client)
    assert status == 400
    assert "not started from a config file" in body["error"]["message"]


async def test_sighup_reloads_a_running_gateway_and_an_invalid_file_keeps_it_serving(
    tmp_path: Path, mock_url: str
) -> None:
    path = write_config(tmp_path, _data(mock_url))
    gateway = GatewayProcess(path, free_port(), tmp_path / "gateway.log")
    try:
        await gateway.ready()
        data = _data(mock_url)
        data["keys"].append({"name": "team-new", "key_sha256": sha(NEW_KEY), "routes": ["*"]})
        write_config(tmp_path, data)
        gateway.signal(signal.SIGHUP)
        assert await _status_soon(gateway.url, NEW_KEY, 200)
        path.write_text("routes: [this is not a config\n")
        gateway.signal(signal.SIGHUP)
        await _logged(gateway, "config_reload_failed")
        assert await _status_soon(gateway.url, NEW_KEY, 200)
    finally:
        gateway.stop()
    failed = [line for line in gateway.logs() if line.get("event") == "config_reload_failed"]
    assert "not valid YAML" in failed[0]["error"]


# `gateway serve`, with a reload asked while it starts: the file changes after it was read
# and a SIGHUP comes before the server is up (from a config manager, or from the supervisor
# passing a reload on to a worker it has just started).
SIGHUP_WHILE_STARTING = """
import os, signal, sys
import gateway.serve
from gateway.cli import main

serve = gateway.serve.serve

def serve_after_a_sighup(source, config):
    os.replace(os.environ["NEXT_CONFIG"], source.path)
    os.kill(os.getpid(), signal.SIGHUP)
    return serve(source, config)

gateway.serve.serve = serve_after_a_sighup
sys.exit(main(sys.argv[1:]))
"""


async def test_sighup_while_starting_is_a_reload_once_serving_not_the_end(
    tmp_path: Path, mock_url: str
) -> None:
    """SIGHUP's default action ends a process: the gateway died of a reload asked then."""
    path = write_config(tmp_path, _data(mock_url))
    data = _data(mock_url)
    data["keys"].append({"name": "team-new", "key_sha256": sha(NEW_KEY), "routes": ["*"]})
    env = {"NEXT_CONFIG": str(write_config(tmp_path, data, "next.yaml"))}
    launcher = ["-c", SIGHUP_WHILE_STARTING]  # this checkout's gateway, as `-m` imports it
    gateway = GatewayProcess(path, free_port(), tmp_path / "gateway.log", (), env, launcher)
    try:
        await gateway.ready()
        assert await _status_soon(gateway.url, NEW_KEY, 200)
        assert await _status_soon(gateway.url, KEY_A, 200)
    finally:
        gateway.stop()
    assert [x["keys"] for x in gateway.logs() if x.get("event") == "config_reloaded"] == [3]


async def _status_soon(url: str, key: str, want: int) -> bool:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.post(
                f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
            ) as resp:
                if resp.status == want:
                    return True
            await asyncio.sleep(0.05)
    return False


async def _logged(gateway: GatewayProcess, event: str) -> None:
    for _ in range(100):
        if any(line.get("event") == event for line in gateway.logs()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event} log line")


async def test_circuit_settings_changed_by_a_reload_apply_to_the_circuit_it_keeps(
    served: Callable[..., Awaitable[tuple[Client, Path]]], mock_url: str
) -> None:
    """The circuit keeps its failures across the reload, and the new threshold applies."""
    route = {"name": "chat", "match": {"path": "/v1/*"}, "provider": "openai"}
    route["retry"] = {"attempts": 1}
    client, path = await served(routes=[{**route, "circuit": {"failures": 3}}])
    auth = {"Authorization": f"Bearer {KEY_A}"}
    failing = {**auth, "x-mock-status": "500"}
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=failing)).status == 500
    write_config(path.parent, _data(mock_url, routes=[{**route, "circuit": {"failures": 2}}]))
    assert (await _reload(client))[0] == 200
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=failing)).status == 500
    resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
    assert resp.status == 503  # two failures in a row: open, as the reloaded config says
    assert (await resp.json())["error"]["code"] == "circuit_open"

"""`gateway serve --workers N`: N processes on one port, metrics summed across them, a worker
that dies is replaced, a reload reaches every worker, SIGTERM stops them all with exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import KEY_A, base_config, sha
from tests.processes import GatewayProcess, free_port, write_config

ADMIN = "admin-token-workers"
NEW_KEY = "gk-new-for-every-worker"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _data(mock_url: str, store: str) -> dict[str, Any]:
    return base_config(mock_url, admin={"token_sha256": sha(ADMIN)}, storage={"url": store})


async def _post_fresh(url: str, key: str) -> int:
    """On a new connection each time, so SO_REUSEPORT spreads them over the workers."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
        ) as resp,
    ):
        return resp.status


def _worker_pids(gateway: GatewayProcess) -> list[int]:
    return [line["pid"] for line in gateway.logs() if line.get("event") == "listening"]


async def _until(check: Any, timeout_s: float = 20.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def _metrics_reach(url: str, total: float, timeout_s: float = 10.0) -> bool:
    """Whether the summed request counter reaches `total` within `timeout_s`."""
    async with aiohttp.ClientSession() as session:
        for _ in range(int(timeout_s / 0.05)):
            async with session.get(f"{url}/metrics") as m:
                if _requests_total(await m.text()) == total:
                    return True
            await asyncio.sleep(0.05)
    return False


def _requests_total(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "llm_gateway_requests_total"
    )


async def test_two_workers_share_the_port_sum_metrics_survive_a_kill_and_reload_together(
    tmp_path: Path, mock_url: str, redis_url: str
) -> None:
    env_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    assert env_dir is None  # the gateway makes its own directory
    path = write_config(tmp_path, _data(mock_url, redis_url))
    gateway = GatewayProcess(path, free_port(), tmp_path / "gateway.log", ["--workers", "2"])
    try:
        await gateway.ready()
        await _until(lambda: len(set(_worker_pids(gateway))) == 2)
        statuses = await asyncio.gather(*(_post_fresh(gateway.url, KEY_A) for _ in range(20)))
        assert statuses == [200] * 20
        # Counted once each answer is sent, so a moment after the client has it.
        assert await _metrics_reach(gateway.url, 20)

        first, _ = _worker_pids(gateway)
        os.kill(first, signal.SIGKILL)
        await _until(lambda: len(_worker_pids(gateway)) == 3)  # a replacement started
        assert await _post_fresh(gateway.url, KEY_A) == 200

        data = _data(mock_url, redis_url)
        data["keys"].append({"name": "team-new", "key_sha256": sha(NEW_KEY), "routes": ["*"]})
        write_config(tmp_path, data)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{gateway.url}/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}
            ) as reloaded,
        ):
            assert reloaded.status == 200
        await _until(
            lambda: sum(1 for x in gateway.logs() if x.get("event") == "config_reloaded") >= 3
        )
        statuses = await asyncio.gather(*(_post_fresh(gateway.url, NEW_KEY) for _ in range(20)))
        assert statuses == [200] * 20

        metrics_dir = next(x for x in gateway.logs() if x.get("event") == "supervisor")
        assert Path(metrics_dir["metrics_dir"]).is_dir()
        gateway.signal(signal.SIGTERM)
        assert await gateway.exit_code(timeout_s=15) == 0
        assert not Path(metrics_dir["metrics_dir"]).exists()  # the directory it made is gone
    finally:
        gateway.stop()


def test_workers_on_the_embedded_store_are_refused_at_start(tmp_path: Path, mock_url: str) -> None:
    """Each worker would keep its own memory:// store: every budget and rate limit counted
    once per worker, and the admin views showing whichever worker answered."""
    path = write_config(tmp_path, _data(mock_url, "memory://"))
    serve = ["serve", "--config", str(path), "--port", str(free_port()), "--workers", "2"]
    code, errors = _gateway(tmp_path, serve)
    assert code == 2
    assert f"{path}: server.workers: 2 workers (or --workers 2) need a store" in errors
    assert "storage.url" in errors
    write_config(tmp_path, {**_data(mock_url, "memory://"), "server": {"workers": 2}})
    code, errors = _gateway(tmp_path, ["check-config", str(path)])
    assert code == 2
    assert "server.workers: 2 workers" in errors


async def test_workers_on_a_port_another_group_serves_exit_1_and_leave_it_alone(
    tmp_path: Path, mock_url: str, redis_url: str
) -> None:
    """SO_REUSEPORT would let the second group join the first one's port, and the kernel
    split the connections between two gateways, maybe with two configs."""
    port = free_port()
    path = write_config(tmp_path, _data(mock_url, redis_url))
    first = GatewayProcess(path, port, tmp_path / "first.log", ["--workers", "2"])
    try:
        await first.ready()
        await _until(lambda: len(set(_worker_pids(first))) == 2)
        second = GatewayProcess(path, port, tmp_path / "second.log", ["--workers", "2"])
        try:
            assert await second.exit_code(timeout_s=15) == 1
        finally:
            second.stop()
        refused = [x for x in second.logs() if x.get("event") == "cannot_listen"]
        assert [(x["host"], x["port"]) for x in refused] == [("127.0.0.1", port)]
        assert _worker_pids(second) == []
        assert await _post_fresh(first.url, KEY_A) == 200
    finally:
        first.stop()


async def test_workers_stopped_while_they_start_exit_0(
    tmp_path: Path, mock_url: str, redis_url: str
) -> None:
    """A worker the SIGTERM reaches before it serves ends by the signal (nothing to drain):
    the group stopped cleanly all the same, and a service manager must not see a failure."""
    path = write_config(tmp_path, _data(mock_url, redis_url))
    gateway = GatewayProcess(path, free_port(), tmp_path / "gateway.log", ["--workers", "2"])
    try:
        await _until(lambda: any(x.get("event") == "workers_started" for x in gateway.logs()))
        gateway.signal(signal.SIGTERM)
        assert await gateway.exit_code(timeout_s=15) == 0
    finally:
        gateway.stop()


async def test_a_replacement_worker_on_a_file_made_invalid_keeps_the_others_serving(
    tmp_path: Path, mock_url: str, redis_url: str
) -> None:
    """The file is refused by a reload (the running config stays): a worker dying while it
    is being edited must not take the whole group down with it."""
    path = write_config(tmp_path, _data(mock_url, redis_url))
    gateway = GatewayProcess(path, free_port(), tmp_path / "gateway.log", ["--workers", "2"])
    try:
        await gateway.ready()
        await _until(lambda: len(set(_worker_pids(gateway))) == 2)
        path.write_text("routes: [this is not a config\n")
        os.kill(_worker_pids(gateway)[0], signal.SIGKILL)
        await _until(
            lambda: any(x.get("event") == "worker_failed_at_start" for x in gateway.logs())
        )
        assert gateway.proc.poll() is None
        statuses = await asyncio.gather(*(_post_fresh(gateway.url, KEY_A) for _ in range(10)))
        assert statuses == [200] * 10
        write_config(tmp_path, _data(mock_url, redis_url))
        await _until(lambda: len(_worker_pids(gateway)) == 3)  # a replacement serves again
        gateway.signal(signal.SIGTERM)
        assert await gateway.exit_code(timeout_s=15) == 0
    finally:
        gateway.stop()


def _gateway(tmp_path: Path, args: list[str]) -> tuple[int, str]:
    """Exit code and stderr of a `gateway` command (into a file: workers that did start
    would hold a pipe open)."""
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            stdout=subprocess.DEVNULL,
            stderr=out,
            timeout=30,
            check=False,
        )
    return done.returncode, errors.read_text()


def _exited(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (its parent, the supervisor, was killed)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _read_more(fd: int, got: bytearray) -> list[bytes]:
    """Into `got`, what there is to read now; the whole lines read so far."""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            got += chunk
    return bytes(got[: got.rfind(b"\n") + 1]).splitlines()


def _listening_pids(lines: list[bytes]) -> list[int]:
    found = (orjson.loads(x) for x in lines if x.startswith(b"{"))
    return [x["pid"] for x in found if x.get("event") == "listening"]


@pytest.mark.parametrize("output", ["file", "pipe whose reader is gone"])
def test_workers_whose_supervisor_is_killed_drain_and_exit(
    tmp_path: Path, mock_url: str, redis_url: str, output: str
) -> None:
    """Their log going nowhere (the supervisor's output was a pipe, read by a process that
    went with it) must not keep them alive: writing the line that says so failed, before."""
    path = write_config(tmp_path, _data(mock_url, redis_url))
    serve = ["serve", "--config", str(path), "--port", str(free_port()), "--workers", "2"]
    if output == "file":
        reader = os.open(tmp_path / "out.log", os.O_RDONLY | os.O_CREAT)
        out = os.open(tmp_path / "out.log", os.O_WRONLY)
    else:
        reader, out = os.pipe()
        os.set_blocking(reader, False)
    supervisor = subprocess.Popen([sys.executable, "-m", "gateway", *serve], stdout=out, stderr=out)
    os.close(out)  # the supervisor and its workers hold it
    got, lines = bytearray(), []
    try:
        for _ in range(400):
            lines = _read_more(reader, got)
            if len(workers := _listening_pids(lines)) == 2:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"two workers never listened: {lines[-5:]}")
        supervisor.kill()
        supervisor.wait()
        os.close(reader)  # the log's reader goes too: a pipe's writers now fail
        for _ in range(400):
            if all(_exited(pid) for pid in workers):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"workers still running: {workers}")
    finally:
        supervisor.kill()
        for pid in _listening_pids(lines):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

"""Helpers for tests that run `gateway serve` (and redis-server) as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp: Path, data: dict[str, Any], name: str = "gateway.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


class GatewayProcess:
    """One `gateway serve` process; its JSON log lines go to a file."""

    def __init__(
        self,
        config: Path,
        port: int,
        log: Path,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        launcher: Sequence[str] = ("-m", "gateway"),
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log
        command = [sys.executable, *launcher, "serve", "--config", str(config)]
        env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}  # as the image runs it
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*command, "--port", str(port), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def ready(self, path: str = "/healthz", timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"gateway exited: {self.log_path.read_text()[-2000:]}")
                try:
                    async with session.get(self.url + path) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"gateway at {self.url} did not start")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def exit_code(self, timeout_s: float) -> int:
        """Wait for the process to exit, without blocking the test's event loop."""
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway did not exit within {timeout_s}s")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far (a line still being written is left for the
        next read)."""
        text = self.log_path.read_text(errors="replace")
        lines = []
        for raw in text[: text.rfind("\n") + 1].splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines

    def request_lines(self) -> dict[str, list[dict[str, Any]]]:
        """The per-request log lines, by request id."""
        found: dict[str, list[dict[str, Any]]] = {}
        for line in self.logs():
            if line.get("event") == "request":
                found.setdefault(line["request_id"], []).append(line)
        return found

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


class RedisProcess:
    """A redis-server of the test's own on a spare loopback port, or (`unix`) on a Unix
    socket in `directory` and no port at all (the shared one is never stopped)."""

    def __init__(self, directory: Path, unix: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("REQUIRE_REDIS") == "1":
                pytest.fail("redis-server is needed for this test")
            pytest.skip("redis-server is not installed")
        self.port = 0 if unix else free_port()
        path = directory / "redis.sock"
        self.url = f"unix://{path}?db=0" if unix else f"redis://127.0.0.1:{self.port}/0"
        listen = ["--unixsocket", str(path)] if unix else ["--bind", "127.0.0.1"]
        args = ["--port", str(self.port), *listen, "--save", "", "--appendonly"]
        self.proc = subprocess.Popen(
            [binary, *args, "no", "--dir", str(directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        family, address = (
            (socket.AF_UNIX, str(path)) if unix else (socket.AF_INET, ("127.0.0.1", self.port))
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket(family) as s:
                if s.connect_ex(address) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing answers."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait(timeout=10)


@contextmanager
def redis_process(directory: Path, unix: bool = False) -> Iterator[RedisProcess]:
    redis = RedisProcess(directory, unix)
    try:
        yield redis
    finally:
        redis.stop()


class RedisClusterNodes:
    """A 3-master Redis Cluster of the test's own on spare loopback ports."""

    def __init__(self, directory: Path) -> None:
        if not shutil.which("redis-server") or not shutil.which("redis-cli"):
            if os.environ.get("REQUIRE_REDIS") == "1":
                pytest.fail("redis-server and redis-cli are needed for the cluster test")
            pytest.skip("redis-server/redis-cli not installed")
        self.ports = _cluster_ports(3)
        self.url = f"redis-cluster://127.0.0.1:{self.ports[0]}"
        self.procs: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            node = directory / f"node-{port}"
            node.mkdir()
            self.procs.append(
                subprocess.Popen(
                    [
                        *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
                        *("--cluster-enabled", "yes", "--dir", str(node)),
                        *("--cluster-config-file", str(node / "nodes.conf")),
                        *("--save", "", "--appendonly", "no"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def start(self) -> None:
        for port in self.ports:
            _wait_port(port)
        addresses = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        _wait_cluster_ok(self.ports[0])

    def freeze(self) -> None:
        """SIGSTOP every node: connections are accepted by the kernel but nothing answers."""
        for proc in self.procs:
            proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def redis_cluster_nodes(directory: Path) -> Iterator[RedisClusterNodes]:
    cluster = RedisClusterNodes(directory)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _cluster_ports(count: int) -> list[int]:
    """Free ports below 55536 whose cluster bus port (+10000) is free too."""
    ports: list[int] = []
    # Below the ephemeral range (32768+), where outgoing connections take their ports.
    for port in range(20000 + os.getpid() % 500 * 4, 32767 - 10000):
        if all(_is_free(p) for p in (port, port + 10000)):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise AssertionError("no free ports for a Redis Cluster")


def _is_free(port: int) -> bool:
    """Free to listen on (a port held by an outgoing connection is not)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"redis-server on {port} did not start")


def _wait_cluster_ok(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = subprocess.run(
            ["redis-cli", "-p", str(port), "cluster", "info"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if "cluster_state:ok" in info:
            return
        time.sleep(0.1)
    raise AssertionError("the Redis Cluster did not reach cluster_state:ok")

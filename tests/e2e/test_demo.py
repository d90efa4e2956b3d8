"""`gateway demo` (the README's first command) starts, prints a key that works, and stops; it
serves with the server protections of `gateway serve`."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import aiohttp
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import ServerConfig
from tests.processes import free_port


@dataclass(frozen=True)
class Demo:
    proc: asyncio.subprocess.Process
    url: str
    port: int
    banner: str


@asynccontextmanager
async def running_demo() -> AsyncIterator[Demo]:
    """`gateway demo` on spare ports, once it has printed its banner; killed at the end if the
    test has not stopped it."""
    port, mock_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "demo",
        "--port",
        str(port),
        "--mock-port",
        str(mock_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        banner = ""
        while "Ctrl-C" not in banner:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert line, f"demo exited early: {banner}"
            banner += line.decode()
        yield Demo(proc, f"http://127.0.0.1:{port}", port, banner)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with suppress(Exception):
            await proc.communicate()


async def test_demo_serves_the_printed_key_and_stops_on_ctrl_c() -> None:
    async with running_demo() as demo:
        key = re.search(r"export GATEWAY_API_KEY=(\S+)", demo.banner)
        assert key is not None
        url = demo.url
        async with AsyncOpenAI(base_url=f"{url}/v1", api_key=key.group(1)) as client:
            answer = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
            )
        assert answer.choices[0].message.content == "Mock answer: Hello"
        async with AsyncAnthropic(base_url=url, api_key=key.group(1)) as claude:
            listed = [m.id async for m in claude.models.list()]
            one = await claude.models.retrieve(listed[0])
            # Both SDKs' temperature-0 requests are answered from the cache the second time.
            seen = []
            for _ in range(2):
                raw = await claude.messages.with_raw_response.create(
                    model="claude-haiku-4-5",
                    max_tokens=50,
                    messages=[{"role": "user", "content": "Cache me"}],
                    extra_body={"temperature": 0},  # (not a parameter of this SDK's create)
                )
                seen.append((raw.headers.get("x-gateway-cache"), (await raw.parse()).content[0]))
        assert listed == ["claude-sonnet-4-5", "claude-haiku-4-5"]
        assert (one.id, one.type) == ("claude-sonnet-4-5", "model")
        assert [status for status, _ in seen] == ["MISS", "HIT"]
        assert seen[0][1] == seen[1][1]
        async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as ready:
            assert ready.status == 200
        demo.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(demo.proc.wait(), timeout=10) == 0


async def test_demo_closes_a_connection_whose_headers_never_end_at_the_header_deadline() -> None:
    """Slowloris: the demo's header deadline is `gateway serve`'s default, not the 75 s of
    keep-alive, and the connection is counted as `serve` counts it."""
    deadline_s = ServerConfig().header_timeout_s
    async with running_demo() as demo:
        reader, writer = await asyncio.open_connection("127.0.0.1", demo.port)
        opened = time.monotonic()
        writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")
        try:
            answer = await asyncio.wait_for(reader.read(), timeout=deadline_s + 5)
        finally:
            writer.close()
        lived = time.monotonic() - opened
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{demo.url}/metrics") as resp,
        ):
            metrics = await resp.text()
    assert answer == b""  # closed without an answer
    assert deadline_s - 0.05 <= lived < deadline_s + 2
    assert _sample(metrics, "llm_gateway_slow_connections_closed_total") == 1


def _sample(exposition: str, name: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == name
    )


@pytest.mark.parametrize(
    ("command", "taken"),
    [("demo", "--mock-port"), ("demo", "--port"), ("mock-provider", "--port")],
)
def test_a_port_in_use_is_a_clear_error_not_a_traceback(command: str, taken: str) -> None:
    """Another demo still running, say: the command names the address and the options that
    choose another, and exits 1."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports = {"--port": free_port(), "--mock-port": free_port()} if command == "demo" else {}
        ports[taken] = port
        argv = [arg for flag, value in ports.items() for arg in (flag, str(value))]
        done = _gateway(command, *argv)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"gateway {command}: cannot listen: " in done.stderr
    assert f"('127.0.0.1', {port}): address already in use" in done.stderr
    assert "choose another with --port" in done.stderr


@pytest.mark.parametrize("command", ["demo", "mock-provider"])
def test_a_host_with_no_address_is_a_clear_error_not_a_traceback(command: str) -> None:
    ports = ["--port", str(free_port())] + (
        ["--mock-port", str(free_port())] if command == "demo" else []
    )
    done = _gateway(command, "--host", "no such host!", *ports)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"gateway {command}: cannot listen on 'no such host!': " in done.stderr


def _gateway(*argv: str) -> subprocess.CompletedProcess[str]:
    """`gateway ARGV...` run to its end (a minute at most), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

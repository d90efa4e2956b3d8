"""`gateway demo` (the README's first command) starts, prints a key that works, and stops."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from contextlib import suppress

import aiohttp
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from tests.processes import free_port


async def test_demo_serves_the_printed_key_and_stops_on_ctrl_c() -> None:
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
        key = re.search(r"export GATEWAY_API_KEY=(\S+)", banner)
        assert key is not None
        url = f"http://127.0.0.1:{port}"
        async with AsyncOpenAI(base_url=f"{url}/v1", api_key=key.group(1)) as client:
            answer = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
            )
        assert answer.choices[0].message.content == "Mock answer: Hello"
        async with AsyncAnthropic(base_url=url, api_key=key.group(1)) as claude:
            listed = [m.id async for m in claude.models.list()]
            one = await claude.models.retrieve(listed[0])
        assert listed == ["claude-sonnet-4-5", "claude-haiku-4-5"]
        assert (one.id, one.type) == ("claude-sonnet-4-5", "model")
        async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as ready:
            assert ready.status == 200
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with suppress(Exception):
            await proc.communicate()

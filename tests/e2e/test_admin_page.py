"""The /admin page in headless Chromium: it asks for the token, then shows stats and requests
without a console error (a CSP violation or a failed fetch would be one)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.conftest import KEY_A, KEY_B, sha
from tests.system_packages import require_binary

ADMIN = "admin-token-page-test"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class DevTools:
    """The few DevTools protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.problems: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            data = msg.json()
            if "id" in data:
                self._waiting.pop(data["id"]).set_result(data)
            else:
                self._note(data["method"], data.get("params", {}))

    def _note(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            self.problems.append(f"exception: {params['exceptionDetails']}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.problems.append(f"console.{params['type']}: {params['args']}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.problems.append(f"log: {params['entry']['text']}")

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        answer = await asyncio.wait_for(future, 10)
        assert "error" not in answer, answer
        result: dict[str, Any] = answer["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 15) -> Any:
        for _ in range(int(timeout_s / 0.1)):
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"never true: {expression}")

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@pytest.fixture
async def gateway_url(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    make_config: Callable[..., GatewayConfig],
) -> str:
    app = create_app(make_config(admin={"token_sha256": sha(ADMIN)}))
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[DevTools]:
    binary = require_binary("chromium", "chromium")
    profile = tmp_path / "profile"
    log = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the test ends every process it made
    )
    try:
        port = await _devtools_port(profile / "DevToolsActivePort", proc)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                pages = [t for t in await resp.json() if t["type"] == "page"]
            async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                tools = DevTools(ws)
                for domain in ("Runtime", "Log", "Page"):
                    await tools.call(f"{domain}.enable")
                yield tools
                await tools.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


async def _devtools_port(path: Path, proc: subprocess.Popen[bytes]) -> int:
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(f"chromium exited with {proc.returncode}")
        if path.exists() and path.read_text().strip():
            return int(path.read_text().split()[0])
        await asyncio.sleep(0.05)
    raise AssertionError("chromium did not open its DevTools port")


async def send_requests(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for key, headers in (
            (KEY_A, {"x-request-id": "page-ok-1"}),
            (KEY_B, {"x-request-id": "page-ok-2"}),
            (KEY_A, {"x-request-id": "page-bad-1", "x-mock-status": "400"}),
        ):
            auth = {"Authorization": f"Bearer {key}", **headers}
            async with session.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth) as resp:
                await resp.read()


async def test_page_asks_for_the_token_then_shows_stats_and_the_requests_sent(
    gateway_url: str, browser: DevTools
) -> None:
    await send_requests(gateway_url)
    await browser.call("Page.navigate", url=f"{gateway_url}/admin")
    await browser.wait_for("getComputedStyle(document.getElementById('login')).display === 'block'")

    await browser.call("Page.navigate", url=f"{gateway_url}/admin#token={ADMIN}")
    rows = "document.querySelectorAll('#requests-table tbody tr')"
    await browser.wait_for(f"{rows}.length >= 3")
    ids = await browser.evaluate(f"[...{rows}].map(r => r.dataset.requestId)")
    assert ids[:3] == ["page-bad-1", "page-ok-2", "page-ok-1"]
    table = await browser.evaluate("document.getElementById('requests-table').innerText")
    for shown in ("team-a", "team-b", "gpt-4o-mini", "200", "400"):
        assert shown in table
    assert await browser.evaluate("document.getElementById('requests').textContent") == "3"
    top_keys = await browser.evaluate("document.getElementById('top-keys').innerText")
    assert "team-a" in top_keys
    # The token left the address bar and lives in this tab's sessionStorage only.
    assert await browser.evaluate("location.hash") == ""
    assert await browser.evaluate("sessionStorage.length") == 1
    assert browser.problems == []

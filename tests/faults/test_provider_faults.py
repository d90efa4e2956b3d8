"""Provider and client faults: a stream reset or stalled mid-way, truncated JSON, a redirect, a
client that leaves mid-stream. Each request ends in time with a reason, is logged once, is
billed where tokens may have been spent, and leaves no task, descriptor or reservation behind."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from aiohttp.test_utils import TestClient

from gateway.accounting import local_periods
from gateway.context import RequestContext
from gateway.mock import MockState
from gateway.store.accounting import ACCOUNTING
from tests.conftest import sha

Client = TestClient[Any, Any]
KEY = "gk-faults-budgeted"
AUTH = {"Authorization": f"Bearer {KEY}"}
WORDS = " ".join(f"w{i}" for i in range(12))
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}
IDLE_S = 0.3
REPEAT = 4


@pytest.fixture
async def gateway(make_gateway: Callable[..., Awaitable[Client]]) -> Client:
    return await make_gateway(
        keys=[
            {
                "name": "budgeted",
                "key_sha256": sha(KEY),
                "routes": ["*"],
                "budget": {"usd_per_month": 100},
            }
        ],
        routes=[
            {
                "name": "chat",
                "match": {"path": "/v1/chat/completions"},
                "provider": "openai",
                "timeout_s": 3,
                "idle_timeout_s": IDLE_S,
                "retry": {"attempts": 1},
            }
        ],
    )


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _contexts() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, RequestContext))


async def _books(gateway: Client) -> tuple[int, int]:
    """Spent and held (open reservations) this month for the key."""
    month = local_periods()[1]
    accounting = gateway.server.app[ACCOUNTING]
    spent, held = await accounting.read([f"spent:k:budgeted:m{month}", f"held:k:budgeted:m{month}"])
    return spent, held


async def _stream_events(gateway: Client, **mock: str) -> list[dict[str, Any]]:
    resp = await gateway.post("/v1/chat/completions", json=STREAM, headers={**AUTH, **mock})
    assert resp.status == 200
    text = await resp.read()
    return [
        orjson.loads(e.removeprefix(b"data: "))
        for e in text.split(b"\n\n")
        if e.startswith(b"data: {")
    ]


async def _reset_mid_stream(gateway: Client) -> None:
    events = await _stream_events(gateway, **{"x-mock-reply": WORDS, "x-mock-cut-after": "4"})
    assert events[-1]["error"]["code"] == "upstream_failed"


async def _stall_past_idle_timeout(gateway: Client) -> None:
    started = time.monotonic()
    events = await _stream_events(
        gateway, **{"x-mock-reply": WORDS, "x-mock-chunk-delay-ms": "2000"}
    )
    assert events[-1]["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - started < IDLE_S + 1.0


async def _truncated_json(gateway: Client) -> None:
    resp = await gateway.post(
        "/v1/chat/completions", json=CHAT, headers={**AUTH, "x-mock-malformed": "1"}
    )
    assert resp.status == 200  # the provider's own status and bytes, passed through
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(await resp.read())


async def _redirect(gateway: Client, mock: MockState) -> None:
    before = len(mock.requests)
    resp = await gateway.post(
        "/v1/chat/completions",
        json=CHAT,
        headers={**AUTH, "x-mock-redirect": "http://127.0.0.1:9/v1/chat/completions"},
    )
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "upstream_failed"
    assert len(mock.requests) == before + 1  # not followed


async def _client_leaves_mid_stream(gateway: Client) -> None:
    url = str(gateway.make_url("/v1/chat/completions"))
    headers = {**AUTH, "x-mock-reply": WORDS, "x-mock-chunk-delay-ms": "50"}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(url, json=STREAM, headers=headers)
        await resp.content.readany()  # the first events arrived
        resp.close()  # and the client goes


FAULTS = {
    "reset": ("stream_interrupted", "estimate"),
    "stall": ("stream_interrupted", "estimate"),
    "truncated": ("malformed_answer", "reserved"),
    "redirect": ("failed", "none"),
    "leave": ("client_disconnected", "estimate"),
}


async def _run(name: str, gateway: Client, mock: MockState) -> None:
    if name == "reset":
        await _reset_mid_stream(gateway)
    elif name == "stall":
        await _stall_past_idle_timeout(gateway)
    elif name == "truncated":
        await _truncated_json(gateway)
    elif name == "redirect":
        await _redirect(gateway, mock)
    else:
        await _client_leaves_mid_stream(gateway)


async def _settled(logs: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    for _ in range(100):  # a client that left is settled just after it went
        lines = [line for line in logs if line["event"] == "request"]
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.02)
    raise AssertionError("a request was never logged")


async def _tasks_back_to(count: int) -> bool:
    """Whether the tasks running fall back to `count` within a second: the request log and
    the statistics are written by short tasks on timers (50 ms), which may be under way."""
    for _ in range(50):
        if len(asyncio.all_tasks()) <= count:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_ends_in_time_logged_billed_and_leaves_nothing_behind(
    fault: str, gateway: Client, mock: MockState
) -> None:
    assert (await gateway.post("/v1/chat/completions", json=CHAT, headers=AUTH)).status == 200
    # aiohttp keeps the last request of each kept-alive connection until the next one.
    tasks, fds, contexts = len(asyncio.all_tasks()), _open_fds(), _contexts()
    spent_before, _ = await _books(gateway)
    with structlog.testing.capture_logs() as logs:
        for _ in range(REPEAT):
            async with asyncio.timeout(5):  # nothing hangs
                await _run(fault, gateway, mock)
        lines = await _settled(logs, REPEAT)
    outcome, source = FAULTS[fault]
    assert len(lines) == REPEAT  # one line per request
    assert {(line["outcome"], line["cost_source"]) for line in lines} == {(outcome, source)}
    if fault != "redirect":
        assert all(line["status"] != 500 for line in lines)
    spent, held = await _books(gateway)
    billed = sum(round(float(line["cost_usd"]) * 1_000_000) for line in lines)
    assert held == 0  # every reservation settled
    assert spent - spent_before == billed
    if source != "none":
        assert billed > 0
    assert await _tasks_back_to(tasks)
    assert _open_fds() <= fds + 4  # pooled connections may come and go; none pile up
    assert _contexts() <= contexts  # no request's state outlives it


async def test_a_stream_longer_than_the_idle_timeout_is_not_cut_while_its_chunks_keep_coming(
    gateway: Client,
) -> None:
    """The idle timeout counts from the last chunk, not from the start of the stream."""
    words = " ".join(f"w{i}" for i in range(8))
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(10):  # nothing hangs
            events = await _stream_events(
                gateway, **{"x-mock-reply": words, "x-mock-chunk-delay-ms": str(IDLE_S * 400)}
            )
        lines = await _settled(logs, 1)
    assert time.monotonic() - started > 2 * IDLE_S  # each gap under it, the whole stream not
    assert all("error" not in e for e in events)
    text = "".join(c["delta"].get("content", "") for e in events for c in e["choices"])
    assert text == words
    assert (lines[0]["outcome"], lines[0]["status"]) == ("ok", 200)

"""The request log's writes: never waiting on a slow store, bounded, and counted when lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from fakeredis import FakeAsyncRedis
from prometheus_client import CollectorRegistry

from gateway.config import parse_config
from gateway.metrics import Metrics
from gateway.requestlog import (
    FLUSH_ENTRIES,
    FLUSH_S,
    MAX_PENDING,
    WRITE_TIMEOUT_S,
    RequestLog,
    size_from_env,
    status_matches,
)
from gateway.runtime import Runtime
from tests.conftest import base_config


class SlowStore(FakeAsyncRedis):  # type: ignore[misc]  # fakeredis is untyped
    """A store whose every request-log write takes longer than the log waits; it counts the
    writes (script calls) and the entries they carry."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] in ("EVALSHA", "EVAL"):
            self.writes.append(len(args) - 6)  # command, sha, numkeys, key, size, trim; entries
            await asyncio.sleep(10)
        return await super().execute_command(*args, **options)


@pytest.fixture
def metrics() -> Metrics:
    runtime = Runtime.build(parse_config(base_config("http://127.0.0.1:9"), "<test>"))
    return Metrics(CollectorRegistry(), runtime)


def dropped(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("llm_gateway_request_log_dropped_total") or 0


async def test_write_returns_at_once_and_a_slow_store_write_is_abandoned_and_counted(
    metrics: Metrics,
) -> None:
    log = RequestLog(SlowStore(), metrics, 1000, exact_trim=False)
    began = time.perf_counter()
    log.write({"request_id": "r1", "status": 200})
    assert time.perf_counter() - began < 0.01
    await asyncio.sleep(FLUSH_S + WRITE_TIMEOUT_S + 0.1)
    assert dropped(metrics) == 1
    errors = {"operation": "request_log"}
    assert metrics.registry.get_sample_value("llm_gateway_redis_errors_total", errors) == 1


async def test_one_turns_entries_are_one_store_command(metrics: Metrics) -> None:
    store = FakeAsyncRedis()
    log = RequestLog(store, metrics, 1000, exact_trim=True)
    log.write({"request_id": "r0", "status": 200})  # the first write loads the script
    await log.aclose(wait_s=1)
    sent: list[tuple[Any, ...]] = []
    original = store.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        sent.append(args)
        return await original(*args, **options)

    store.execute_command = counting
    for i in range(1, 4):
        log.write({"request_id": f"r{i}", "status": 200})
    await log.aclose(wait_s=1)
    assert [args[0] for args in sent] == ["EVALSHA"]
    rows = await log.recent(10)
    assert [row["request_id"] for row in rows] == ["r3", "r2", "r1", "r0"]  # newest first


async def test_writes_past_the_pending_limit_are_dropped_not_queued(metrics: Metrics) -> None:
    store = SlowStore()
    log = RequestLog(store, metrics, 1000, exact_trim=False)
    for i in range(MAX_PENDING + 5):
        log.write({"request_id": str(i)})
    await asyncio.sleep(0.01)
    # Sent as soon as FLUSH_ENTRIES wait; the rest when FLUSH_S has passed.
    assert sum(store.writes) == MAX_PENDING
    assert max(store.writes) == FLUSH_ENTRIES
    await asyncio.sleep(FLUSH_S + 0.05)
    assert sum(store.writes) == MAX_PENDING  # the store has not answered: no room
    assert dropped(metrics) == 5
    log.write({"request_id": "late"})
    await asyncio.sleep(FLUSH_S + 0.05)
    assert dropped(metrics) == 6
    await log.aclose(wait_s=0.01)


@pytest.mark.parametrize(
    ("status", "wanted", "matches"),
    [
        (429, "429", True),
        (429, "4xx", True),
        (503, "4xx", False),
        (503, "error", True),
        (200, "error", False),
        (None, "error", False),
    ],
)
def test_status_filter_takes_a_code_a_class_or_error(
    status: int | None, wanted: str, matches: bool
) -> None:
    assert status_matches(status, wanted) is matches


def test_log_size_comes_from_the_environment_with_a_safe_default() -> None:
    assert size_from_env({}) == 1000
    assert size_from_env({"GATEWAY_REQUEST_LOG_SIZE": "50"}) == 50
    assert size_from_env({"GATEWAY_REQUEST_LOG_SIZE": "lots"}) == 1000
    assert size_from_env({"GATEWAY_REQUEST_LOG_SIZE": "0"}) == 1


@pytest.mark.parametrize("serialised", [False, True])  # the log line's JSON handed over
async def test_an_entry_is_its_time_then_the_fields_with_free_text_cut(
    metrics: Metrics, serialised: bool
) -> None:
    log = RequestLog(FakeAsyncRedis(), metrics, 1000, exact_trim=True)
    sent = {"request_id": "r1", "method": "POST", "path": "/v1/" + "p" * 300, "model": None}
    before = time.time()
    log.write(sent, orjson.dumps(sent) if serialised else None)
    await log.aclose(wait_s=1)
    (entry,) = await log.recent(10)
    assert list(entry)[:5] == ["time", "request_id", "method", "path", "model"]
    assert before - 0.001 <= entry["time"] <= time.time()
    assert entry["path"] == sent["path"][:200]
    assert (entry["request_id"], entry["method"], entry["model"]) == ("r1", "POST", None)
    assert sent["path"] == "/v1/" + "p" * 300  # the caller's fields are left as they were

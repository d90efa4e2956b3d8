"""A request's bill lands before its answer leaves (a stream's end included); its cache write
does not hold the answer (this process serves the entry from memory meanwhile); the store's
background commands share the round trips of the requests that wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import routes
from gateway.cache.storage import CacheStore
from gateway.drain import DRAIN
from gateway.metrics import METRICS
from gateway.mock import MockState
from gateway.store import open_store
from gateway.store.accounting import ACCOUNTING, Accounting
from gateway.store.coalesce import BACKGROUND, BACKGROUND_DELAY_S
from gateway.store.wire import Wire
from tests.integration.test_budgets import PRICING, A, _keys, _month
from tests.integration.test_cache import cache_config, chat
from tests.integration.test_store_coalesce import count_round_trips

Client = TestClient[Any, Any]
MakeGateway = Callable[..., Awaitable[Client]]


@pytest.fixture
def held_cache_writes(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Cache writes wait until the returned event is set."""
    release = asyncio.Event()
    put = CacheStore.put

    async def held_back(self: CacheStore, *args: Any) -> bool:
        await release.wait()
        return await put(self, *args)

    monkeypatch.setattr(CacheStore, "put", held_back)
    return release


def answered(gateway: Client) -> float:
    """Requests counted in the metrics (as a scrape would see them): a request is counted
    when its bookkeeping is done."""
    metrics = gateway.server.app[METRICS]
    metrics.fold()
    registry = metrics.registry
    return sum(
        sample.value
        for family in registry.collect()
        if family.name == "llm_gateway_requests"
        for sample in family.samples
        if sample.name == "llm_gateway_requests_total"
    )


async def _budgeted(make_gateway: MakeGateway, store_url: str) -> Client:
    """A cached route, and key `a` with a day's budget: every answer is held and billed."""
    return await make_gateway(
        **{
            **cache_config(store_url),
            "pricing": PRICING,
            "keys": _keys(a={"budget": {"usd_per_day": 1}}),
        }
    )


async def test_the_bill_lands_before_the_answer_but_the_cache_write_does_not_hold_it(
    make_gateway: MakeGateway, store_url: str, held_cache_writes: asyncio.Event
) -> None:
    gateway = await _budgeted(make_gateway, store_url)
    resp = await gateway.post("/v1/chat/completions", json=chat(), headers=A)
    assert (resp.status, resp.headers["x-gateway-cache"]) == (200, "MISS")
    await resp.read()
    # With the answer in hand, its bill and its count are in: nothing of it is still held.
    assert await gateway.server.app[ACCOUNTING].open_reservations() == 0
    assert answered(gateway) == 1
    # The cache write is still under way (held back here): the answer did not wait for it.
    assert gateway.server.app[DRAIN].in_flight == 0
    held_cache_writes.set()
    assert await gateway.server.app[DRAIN].wait_idle(5)


async def test_a_stream_ends_once_its_bill_is_settled(
    make_gateway: MakeGateway, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await _budgeted(make_gateway, store_url)
    settle = Accounting.settle

    async def slow_settle(self: Accounting, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.2)  # a busy store: the stream's end must still wait for it
        return await settle(self, *args, **kwargs)

    monkeypatch.setattr(Accounting, "settle", slow_settle)
    resp = await gateway.post(
        "/v1/chat/completions", json=chat("Stream me", stream=True), headers=A
    )
    assert resp.status == 200
    body = await resp.read()  # to the stream's end
    assert body.rstrip().endswith(b"data: [DONE]")
    # With the whole stream in hand, its bill and its count are in: nothing is still held.
    assert await gateway.server.app[ACCOUNTING].open_reservations() == 0
    assert answered(gateway) == 1
    (spent,) = await gateway.server.app[ACCOUNTING].read([_month("spent")])
    assert spent > 0


async def test_the_log_line_and_metrics_follow_the_answer_once_per_request(
    make_gateway: MakeGateway, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a burst no answer waits for the others' bookkeeping: a request's log line and
    metrics are made once its answer has left, whether its bill needed the store (a miss
    holds its worst case) or not (a hit holds nothing); and before the next request is read."""
    events: list[str] = []
    prepare, record = web.StreamResponse.prepare, routes.record_request

    async def answered_now(response: web.StreamResponse, request: Any) -> Any:
        if response.headers.get("Server") == "llm-gateway":  # not the mock's, in this process
            events.append("answer")
        return await prepare(response, request)

    def recorded(ctx: Any, fields: dict[str, Any], *rest: Any) -> None:
        events.append(f"logged {fields['cache']}")
        record(ctx, fields, *rest)

    monkeypatch.setattr(web.StreamResponse, "prepare", answered_now)
    monkeypatch.setattr(routes, "record_request", recorded)
    gateway = await _budgeted(make_gateway, store_url)
    for expected in ("MISS", "HIT"):
        resp = await gateway.post("/v1/chat/completions", json=chat(), headers=A)
        assert resp.headers["x-gateway-cache"] == expected
        await resp.read()
    assert events == ["answer", "logged MISS", "answer", "logged HIT"]
    assert answered(gateway) == 2
    assert await gateway.server.app[ACCOUNTING].open_reservations() == 0


async def test_a_streams_log_line_and_metrics_come_before_its_end(
    make_gateway: MakeGateway, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream has sent its answer, all but its end, when its bill is settled: its log line
    and metrics are made then, with nothing left to wait for, and its end follows."""
    events: list[str] = []
    record, write_eof = routes.record_request, web.StreamResponse.write_eof

    def recorded(ctx: Any, fields: dict[str, Any], *rest: Any) -> None:
        events.append(f"logged stream={fields['stream']}")
        record(ctx, fields, *rest)

    async def ended(response: web.StreamResponse, data: bytes = b"") -> None:
        if response.headers.get("Server") == "llm-gateway":  # not the mock's, in this process
            events.append("end")
        await write_eof(response, data)

    monkeypatch.setattr(routes, "record_request", recorded)
    monkeypatch.setattr(web.StreamResponse, "write_eof", ended)
    gateway = await _budgeted(make_gateway, store_url)
    resp = await gateway.post(
        "/v1/chat/completions", json=chat("Stream me", stream=True), headers=A
    )
    assert b"[DONE]" in await resp.read()
    resp = await gateway.post("/v1/chat/completions", json=chat("Buffered"), headers=A)
    await resp.read()
    assert events == ["logged stream=True", "end", "end", "logged stream=False"]
    assert answered(gateway) == 2
    assert await gateway.server.app[ACCOUNTING].open_reservations() == 0


async def test_a_client_gone_while_its_reservation_waits_leaves_nothing_held(
    make_gateway: MakeGateway, redis_url: str, mock: MockState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reservation runs in the request's own task, so a client that leaves while the
    store is answering cancels it there; the reply, read after, still tells what is held,
    and the request is settled and logged once, without going upstream."""
    gateway = await _budgeted(make_gateway, redis_url)
    held: list[tuple[Any, bytes]] = []
    read = Wire.data_received

    def slow_store(wire: Any, data: bytes) -> None:
        held.append((wire, data))

    monkeypatch.setattr(Wire, "data_received", slow_store)
    with pytest.raises(TimeoutError):
        await gateway.post(
            "/v1/chat/completions",
            json=chat("Leaving"),
            headers=A,
            timeout=aiohttp.ClientTimeout(total=0.3),
        )
    await asyncio.sleep(0.05)  # the connection's close reaches the handler: cancelled
    monkeypatch.setattr(Wire, "data_received", read)
    assert held  # the reservation's reply was on its way when the client left
    for wire, data in held:
        read(wire, data)
    assert await gateway.server.app[DRAIN].wait_idle(5)
    assert await gateway.server.app[ACCOUNTING].open_reservations() == 0
    assert mock.requests == []
    assert answered(gateway) == 1


async def test_a_request_right_behind_its_twin_is_a_hit_while_the_entry_is_written(
    make_gateway: MakeGateway, store_url: str, mock: MockState, held_cache_writes: asyncio.Event
) -> None:
    gateway = await make_gateway(**cache_config(store_url))
    first = await gateway.post("/v1/chat/completions", json=chat(), headers=A)
    first_body = await first.read()
    second = await gateway.post("/v1/chat/completions", json=chat(), headers=A)
    assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == (
        "MISS",
        "HIT",
    )
    assert await second.read() == first_body
    assert len(mock.requests) == 1
    held_cache_writes.set()
    assert await gateway.server.app[DRAIN].wait_idle(5)
    # Written: the store has it for every replica now.
    third = await gateway.post("/v1/chat/completions", json=chat(), headers=A)
    assert third.headers["x-gateway-cache"] == "HIT"
    assert len(mock.requests) == 1


@pytest.mark.redis
async def test_background_commands_ride_with_the_next_batch_or_go_after_a_short_wait(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = count_round_trips(monkeypatch)
    store = open_store(redis_url)

    async def in_background(name: str) -> Any:
        BACKGROUND.set(True)  # as a cache write or the request log does, in its own task
        return await store.incr(name)

    try:
        began = time.perf_counter()
        assert await asyncio.create_task(in_background("alone")) == 1
        assert time.perf_counter() - began >= BACKGROUND_DELAY_S * 0.9
        waiting = asyncio.create_task(in_background("rider"))
        await asyncio.sleep(0)  # queued, waiting for company
        assert await store.get("urgent") is None
        assert await waiting == 1
    finally:
        await store.aclose()
    # The caller who waits is answered first; the background command rode along.
    assert trips == [["INCRBY"], ["GET", "INCRBY"]]

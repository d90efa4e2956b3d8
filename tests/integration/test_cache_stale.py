"""Serve-stale: an expired entry, kept for `stale_s`, answers only when every target failed."""

from __future__ import annotations

import orjson
import pytest

from gateway.accounting import local_periods
from gateway.cache import entries, storage
from gateway.cache.state import cache_stats
from gateway.drain import DRAIN
from gateway.mock import MockState
from gateway.stages import cache as cache_stage
from gateway.store.accounting import ACCOUNTING
from tests.integration.test_cache import A, Client, MakeGateway, cache_config, chat, post

FAILING = {**A, "x-mock-status": "500"}


def move_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Let the cache see a later time (Redis keeps real time: its TTL covers the window)."""
    later = int(seconds * 1000)
    real = entries.now_ms
    for module in (storage, cache_stage):
        monkeypatch.setattr(module, "now_ms", lambda: real() + later)


@pytest.fixture
async def gateway(
    make_gateway: MakeGateway, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> Client:
    gateway = await make_gateway(**cache_config(store_url, ttl_s=1, stale_s=60))
    await post(gateway, chat())
    move_clock(monkeypatch, 2)  # the entry is now expired, but kept for the stale window
    return gateway


async def test_expired_entry_is_served_stale_when_every_target_fails(
    gateway: Client, mock: MockState
) -> None:
    resp, body = await post(gateway, chat(), FAILING)
    assert resp.status == 200
    assert resp.headers["x-gateway-cache"] == "STALE"
    assert b"Mock answer: Hello" in body
    stats = cache_stats(gateway.server.app)
    assert stats.stale == 1
    assert stats.saved_output_tokens > 0
    assert len(mock.requests) == 2


async def test_stale_answer_replays_as_a_stream_for_a_streaming_client(
    gateway: Client, mock: MockState
) -> None:
    resp, body = await post(gateway, chat(stream=True), FAILING)
    assert resp.headers["x-gateway-cache"] == "STALE"
    assert resp.content_type == "text/event-stream"
    assert body.endswith(b"data: [DONE]\n\n")


async def test_stale_answer_is_not_stored_as_a_fresh_entry(
    gateway: Client, mock: MockState
) -> None:
    await post(gateway, chat(), FAILING)
    resp, _ = await post(gateway, chat())
    assert resp.headers["x-gateway-cache"] == "MISS"
    assert len(mock.requests) == 3


async def test_refused_request_is_not_hidden_by_a_stale_answer(
    gateway: Client, mock: MockState
) -> None:
    resp, _ = await post(gateway, chat(), {**A, "x-mock-status": "400"})
    assert resp.status == 400
    assert resp.headers["x-gateway-cache"] == "MISS"


async def test_no_cache_request_gets_no_stale_answer(gateway: Client, mock: MockState) -> None:
    resp, _ = await post(gateway, chat(), {**FAILING, "Cache-Control": "no-cache"})
    assert resp.status >= 500
    assert resp.headers["x-gateway-cache"] == "BYPASS"


async def test_entry_past_its_stale_window_is_not_served(
    gateway: Client, mock: MockState, monkeypatch: pytest.MonkeyPatch
) -> None:
    move_clock(monkeypatch, 62)
    resp, _ = await post(gateway, chat(), FAILING)
    assert resp.status >= 500
    assert resp.headers["x-gateway-cache"] == "MISS"


async def test_route_without_stale_window_gives_the_error(
    make_gateway: MakeGateway, store_url: str, mock: MockState, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await make_gateway(**cache_config(store_url, ttl_s=1))
    await post(gateway, chat())
    move_clock(monkeypatch, 2)
    resp, _ = await post(gateway, chat(), FAILING)
    assert resp.status >= 500
    assert resp.headers["x-gateway-cache"] == "MISS"


async def test_a_stale_answer_counts_no_tokens_as_spent_in_the_statistics(
    gateway: Client,
) -> None:
    """Nothing was spent upstream for it: as for a hit, its tokens are what it saved. The
    statistics count the tokens of the miss that filled the entry, once."""
    resp, body = await post(gateway, chat(), FAILING)
    assert resp.headers["x-gateway-cache"] == "STALE"
    usage = orjson.loads(body)["usage"]  # the miss's own, kept in the entry
    app = gateway.server.app
    assert await app[DRAIN].wait_idle(5)
    accounting = app[ACCOUNTING]
    await accounting.flush_stats()
    stats = await accounting.stats(local_periods()[1])
    # Counted apart from the hits: the hit rate is hits over hits and misses.
    assert (stats["all:requests"], stats["all:stale"], stats.get("all:hits")) == (2, 1, None)
    assert (stats["all:in"], stats["all:out"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )


async def test_a_stale_answer_still_bills_the_try_the_deadline_cut(
    gateway: Client, mock: MockState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider worked on the try the deadline cut, and may bill it: the stale answer
    costs nothing, but that try costs its reservation, as it does when the client gets 504."""
    slow = {**A, "x-mock-latency-ms": "2000", "x-gateway-timeout": "0.2"}
    resp, _ = await post(gateway, chat(), slow)
    assert resp.headers["x-gateway-cache"] == "STALE"
    stale_cost = resp.headers["x-gateway-cost-usd"]
    move_clock(monkeypatch, 62)  # past the stale window: the same request gets its 504
    resp, _ = await post(gateway, chat(), slow)
    assert resp.status == 504
    assert float(resp.headers["x-gateway-cost-usd"]) > 0
    assert stale_cost == resp.headers["x-gateway-cost-usd"]

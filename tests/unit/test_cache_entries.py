"""Stored entries: what counts as complete, the encoding, the stats and the flights."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.cache.complete import is_complete
from gateway.cache.entries import Entry
from gateway.cache.policy import Kind
from gateway.cache.singleflight import Flights
from gateway.cache.stats import CacheStats
from gateway.context import Usage

CHOICE = {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}


@pytest.mark.parametrize(
    ("kind", "body", "complete"),
    [
        ("chat", {"choices": [CHOICE]}, True),
        ("chat", {"choices": [{**CHOICE, "finish_reason": "length"}]}, True),
        ("chat", {"choices": [{**CHOICE, "finish_reason": None}]}, False),
        ("chat", {"choices": [{**CHOICE, "finish_reason": "something_new"}]}, False),
        ("chat", {"choices": []}, False),
        ("chat", {"choices": [CHOICE], "error": {"message": "overloaded"}}, False),
        ("chat", {"error": {"message": "x"}}, False),
        ("chat", ["not", "an", "object"], False),
        ("completion", {"choices": [{"text": "x", "finish_reason": "stop"}]}, True),
        ("embedding", {"object": "list", "data": [{"embedding": [0.1]}]}, True),
        ("embedding", {"object": "list", "data": []}, False),
        ("message", {"type": "message", "stop_reason": "end_turn"}, True),
        ("message", {"type": "message", "stop_reason": "pause_turn"}, False),
        ("message", {"type": "message", "stop_reason": None}, False),
        ("message", {"type": "error", "error": {"type": "overloaded_error"}}, False),
    ],
)
def test_only_complete_successes_are_storable(kind: Kind, body: Any, complete: bool) -> None:
    assert is_complete(kind, body) is complete


def test_entry_round_trips_through_its_encoding() -> None:
    entry = Entry("chat", b'{"a":\n1}', Usage(5, 2, 1, 0), stored_at_ms=10, expires_at_ms=99)
    raw = entry.encode()
    assert raw.startswith(b"99\n")
    assert Entry.decode(raw) == entry
    assert Entry.decode(Entry("message", b"{}", None, 1, 2).encode()) == Entry(
        "message", b"{}", None, 1, 2
    )


@pytest.mark.parametrize(
    "raw",
    [b"", b"garbage", b"99\nnot json\n{}", b'99\n{"v":0,"kind":"chat"}\n{}', b'x\n{"v":1}\n{}'],
)
def test_damaged_or_foreign_entry_decodes_to_nothing(raw: bytes) -> None:
    assert Entry.decode(raw) is None


def test_stats_snapshot_counts_statuses_and_saved_tokens() -> None:
    stats = CacheStats()
    for status in ("HIT", "HIT", "HIT", "MISS", "BYPASS", "STALE", None):
        stats.record(status, Usage(10, 4))
    stats.errors += 1
    snap = stats.snapshot()
    assert (snap.hits, snap.misses, snap.bypasses, snap.stale, snap.errors) == (3, 1, 1, 1, 1)
    assert (snap.saved_input_tokens, snap.saved_output_tokens) == (40, 16)
    assert snap.hit_rate == 0.75
    assert CacheStats().snapshot().hit_rate == 0.0


async def test_flight_followers_get_the_leaders_entry() -> None:
    flights = Flights()
    flight, leads = flights.join("k")
    other, follows = flights.join("k")
    assert (leads, follows, other is flight) == (True, False, True)
    entry = Entry("chat", b"{}", None, 0, 1)
    waiter = asyncio.create_task(other.wait())
    flights.land("k", flight, entry)
    assert await waiter is entry
    assert len(flights) == 0
    assert flights.join("k")[1] is True  # a new flight starts


async def test_flight_followers_give_up_together_at_the_flights_deadline() -> None:
    flights = Flights(follow_wait_s=0.05)
    flight, _ = flights.join("k")
    started = asyncio.get_running_loop().time()
    waiters = [asyncio.create_task(flight.wait()) for _ in range(3)]
    assert await asyncio.gather(*waiters) == [None, None, None]
    assert asyncio.get_running_loop().time() - started >= 0.05
    late = Entry("chat", b"{}", None, 0, 1)
    flights.land("k", flight, late)  # a leader landing after the deadline changes nothing
    assert await flight.wait() is None
    assert len(flights) == 0


async def test_a_follower_that_leaves_does_not_end_the_others_wait() -> None:
    flights = Flights()
    flight, _ = flights.join("k")
    leaving = asyncio.create_task(flight.wait())
    staying = asyncio.create_task(flight.wait())
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    assert not flight.result.done()
    entry = Entry("chat", b"{}", None, 0, 1)
    flights.land("k", flight, entry)
    assert await staying is entry
    assert flight.timer is not None
    assert flight.timer.cancelled()  # landing stops the timer

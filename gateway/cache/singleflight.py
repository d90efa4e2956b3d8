"""Single-flight in one process: the first request for a key leads, identical ones wait.

Across replicas the same role is played by a short Redis lock (see `storage`); a leader that
fails hands its followers nothing, and they go upstream themselves.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.cache.entries import Entry
from gateway.cache.storage import CacheStore, Lookup

# How long a follower waits for a leader's entry (in process, or through Redis), and how long
# a leader's Redis lock lives if it never releases it (a crashed replica).
FOLLOW_WAIT_S = 30.0
LOCK_TTL_S = 30.0
# Polling for another replica's entry: start quick, back off to a gentle rate.
POLL_FIRST_S = 0.02
POLL_MAX_S = 0.25


@dataclass(slots=True)
class Flight:
    """One leader's upstream call; followers await its entry (None: nothing to share)."""

    result: asyncio.Future[Entry | None]
    # When the followers stop waiting for the leader (loop time), and the one timer that
    # ends their wait: armed by the first follower, stopped when the leader lands.
    give_up_at: float
    timer: asyncio.TimerHandle | None = None
    # An expired entry the leader found, so a follower that must go upstream can still
    # serve it if every target fails.
    stale: Entry | None = None

    async def wait(self, within_s: float | None = None) -> Entry | None:
        """The leader's entry; None when it has none to share, or has not landed in time:
        by the flight's own limit, or within `within_s` (this follower's deadline)."""
        result = self.result
        if result.done():
            return result.result()
        loop = result.get_loop()
        if self.timer is None:
            self.timer = loop.call_at(self.give_up_at, self._give_up)
        # Shielded: a follower that leaves (its client gone) must not end the others' wait.
        if within_s is None or loop.time() + within_s >= self.give_up_at:
            return await asyncio.shield(result)
        try:  # a timer of its own only for a follower whose deadline comes first
            async with asyncio.timeout(max(within_s, 0.0)):
                return await asyncio.shield(result)
        except TimeoutError:
            return None

    def _give_up(self) -> None:
        if not self.result.done():
            self.result.set_result(None)


@dataclass(slots=True)
class Flights:
    """The flights in progress in this process, by cache key."""

    follow_wait_s: float = FOLLOW_WAIT_S
    _flights: dict[str, Flight] = field(default_factory=dict)

    def join(self, key: str) -> tuple[Flight, bool]:
        """The key's flight, and whether the caller leads it (True: no flight was running)."""
        flight = self._flights.get(key)
        if flight is not None:
            return flight, False
        loop = asyncio.get_running_loop()
        flight = Flight(loop.create_future(), loop.time() + self.follow_wait_s)
        self._flights[key] = flight
        return flight, True

    def land(self, key: str, flight: Flight, entry: Entry | None) -> None:
        """End a flight: hand `entry` to its followers; later requests start a new one."""
        if self._flights.get(key) is flight:
            del self._flights[key]
        if flight.timer is not None:
            flight.timer.cancel()
        if not flight.result.done():
            flight.result.set_result(entry)

    def __len__(self) -> int:
        return len(self._flights)


async def await_remote_leader(store: CacheStore, key: str, timeout_s: float) -> Lookup:
    """Poll while another replica's leader holds the key's lock.

    Returns the leader's fresh entry, or (lock released without an entry, Redis failing, or
    time up) a lookup without one: the caller then goes upstream itself.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = POLL_FIRST_S
    while (remaining := deadline - loop.time()) > 0:
        await asyncio.sleep(min(delay, remaining))
        found = await store.lookup(key)
        if found.fresh is not None or found.lock != "follower":
            return found
        delay = min(delay * 2, POLL_MAX_S)
    return Lookup()

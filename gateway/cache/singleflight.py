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
    # An expired entry the leader found, so a follower that must go upstream can still
    # serve it if every target fails.
    stale: Entry | None = None

    async def wait(self, timeout_s: float = FOLLOW_WAIT_S) -> Entry | None:
        try:
            async with asyncio.timeout(timeout_s):
                # Shielded: a follower giving up must not cancel the leader's result.
                return await asyncio.shield(self.result)
        except TimeoutError:
            return None


@dataclass(slots=True)
class Flights:
    """The flights in progress in this process, by cache key."""

    _flights: dict[str, Flight] = field(default_factory=dict)

    def join(self, key: str) -> tuple[Flight, bool]:
        """The key's flight, and whether the caller leads it (True: no flight was running)."""
        flight = self._flights.get(key)
        if flight is not None:
            return flight, False
        flight = Flight(asyncio.get_running_loop().create_future())
        self._flights[key] = flight
        return flight, True

    def land(self, key: str, flight: Flight, entry: Entry | None) -> None:
        """End a flight: hand `entry` to its followers; later requests start a new one."""
        if self._flights.get(key) is flight:
            del self._flights[key]
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

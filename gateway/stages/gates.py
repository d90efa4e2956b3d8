"""The check a stage sets up before the upstream call, which later stages must see passed.

The limits stage sets up its reservation as the request's gate without sending it: the gate
is asked when a later stage first needs its verdict, still in the same event-loop turn, so
nothing is lost by waiting (the store client sends the commands of one turn together). That
lets the stage in between choose how to ask:

- `probe(ctx, read)`: the cache stage's read rides in the reservation's own command (one
  script, one round trip); on a hit the reservation holds nothing, so there is nothing to
  settle either.
- `passed(ctx, hold=False)`: a request about to be served from this process's memory (a
  twin's answer) is checked and counted, and holds nothing.
- `passed(ctx)`: a request that may go upstream holds its worst case; one checked earlier
  without holding is topped up.

After the answer, `carry(ctx, write)`: the cache stage's write rides in the settle's own
command, when the request holds something to settle (one script, one round trip, and no
task of its own).

Every stage that answers a request itself (the cache with a stored answer, the upstream
stage with the provider's) first awaits `passed`, which raises the check's refusal (429,
503) if there is one: nothing is served before the verdict.

The first ask runs in the request's own task where the store allows (see the limits
stage's `_Reservation.ask`): the store's reply resumes the request directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import field
from typing import Any, Protocol

from gateway.context import RequestContext
from gateway.records import record
from gateway.store.accounting import Rider


@record
class Probe:
    """A stage's store read sent in the gate's own command; `reply` gets what the read
    returned (None if the request was refused; the store's error if the store failed)."""

    rider: Rider
    reply: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@record
class Carried:
    """A stage's store write sent in the settle's own command; `done` learns its outcome
    (None: written; else the store's error), exactly once, whatever becomes of the settle."""

    rider: Rider
    done: Callable[[BaseException | None], None]


class Gate(Protocol):
    @property
    def started(self) -> bool: ...

    def start(
        self, ctx: RequestContext, hold: bool = True, probe: Probe | None = None
    ) -> asyncio.Future[Any]:
        """Ask (once; a later `hold` tops up a check that held nothing); the verdict."""
        ...

    async def ask(self, ctx: RequestContext, hold: bool = True, probe: Probe | None = None) -> None:
        """The first ask, in the caller's task where the gate can (its verdict is in when
        this returns); else as `start`."""
        ...

    def carry(self, write: Carried) -> bool:
        """Send `write` in the settle's command, if the request has something held to
        settle; False when it has not (the caller then writes on its own)."""
        ...


def verdict_in(ctx: RequestContext, hold: bool = True) -> bool:
    """Whether `passed` would return at once (raising the check's refusal here, as it
    would): no check, or its verdict in and holding what `hold` asks. A request usually
    finds it so, and then need not make and await a coroutine to learn it."""
    gate = ctx.gate
    if gate is None:
        return True
    if not gate.started:
        return False
    verdict = gate.start(ctx, hold)
    if not verdict.done():
        return False
    verdict.result()  # raises what the check raised
    return True


async def passed(ctx: RequestContext, hold: bool = True) -> None:
    """Wait for the request's check, if it has one; raises what the check raised.

    A request cancelled here (its client gone) must not lose the check's result, which its
    settlement needs: a check in a task of its own is shielded; one asked in the request's
    own task hands its reply over (see `Gate.ask`).
    """
    gate = ctx.gate
    if gate is None:
        return
    waiting = time.perf_counter()
    try:
        if not gate.started:
            await gate.ask(ctx, hold)
        verdict = gate.start(ctx, hold)
        if verdict.done():  # in already (the usual case after a probe): nothing to shield
            verdict.result()  # raises what the check raised
            return
        await asyncio.shield(verdict)
    finally:  # also when its client leaves while it waits
        ctx.store_wait_s += time.perf_counter() - waiting


async def probe(ctx: RequestContext, read: Probe) -> bool:
    """Send `read` in the gate's command (its reply may be in already when this returns);
    False when there is no gate or it was asked already (the caller then reads on its
    own)."""
    gate = ctx.gate
    if gate is None or gate.started:
        return False
    waiting = time.perf_counter()
    try:
        await gate.ask(ctx, probe=read)
    finally:
        ctx.store_wait_s += time.perf_counter() - waiting
    return True


def carry(ctx: RequestContext, write: Carried) -> bool:
    """Send `write` in the settle's command (see `Gate.carry`); False when there is no gate
    or nothing to settle (the caller then writes on its own)."""
    gate = ctx.gate
    return gate is not None and gate.carry(write)

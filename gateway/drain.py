"""Graceful shutdown: refuse new requests, let those in flight finish, cut the rest, settle all."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from contextlib import suppress
from typing import Any

import structlog
from aiohttp import web

from gateway.context import RequestContext
from gateway.errors import GatewayError, Unavailable

# Requests cut at the drain deadline get this long to settle (budget, spend, log line).
CUT_GRACE_S = 5.0
# Answered while draining: probes and scrapes; everything else gets 503.
ANSWERED_WHILE_DRAINING = frozenset({"/healthz", "/readyz", "/metrics"})

# Set on a request the drain cut, so its handler ends it as a shutdown, not a disconnect.
CUT = web.RequestKey("drain_cut", bool)
# The response a handler has prepared (its headers sent), if any.
PREPARED: web.RequestKey[web.StreamResponse] = web.RequestKey("prepared_response")

_log = structlog.get_logger("gateway.drain")


def shutting_down() -> GatewayError:
    err = Unavailable("The gateway is shutting down; send the request again.", code="shutting_down")
    err.should_retry = True  # another replica will take it
    return err


class Drain:
    """The requests in flight in this process, and whether it is draining."""

    def __init__(self) -> None:
        self.draining = False
        self._in_flight: dict[asyncio.Task[object], web.Request] = {}
        # Work that must end even if its request is cancelled (its bill and log line, a cache
        # write), in tasks of its own.
        self._finishing: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._hurry = False

    @property
    def in_flight(self) -> int:
        """Requests not yet ended: being answered, or settling after their answer."""
        return len(self._in_flight)

    def enter(self, request: web.Request) -> asyncio.Task[object] | None:
        """A handler starts: its request counts as in flight until `leave`, which is after
        its last byte and its settlement. (Two calls rather than a context manager: this is
        on every request's path.)"""
        task = asyncio.current_task()
        if task is not None:  # always, in a handler
            self._in_flight[task] = request
        return task

    def leave(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            del self._in_flight[task]
        self._changed.set()

    def finish_later(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` in a task of its own, which no client disconnect and no drain cut can
        cancel; the drain waits for it before the store closes."""
        task = asyncio.get_running_loop().create_task(work)
        self._finishing.add(task)
        task.add_done_callback(self._finished)
        return task

    async def finish_pending(self, timeout_s: float) -> None:
        """At shutdown: let the work under way end (up to `timeout_s`)."""
        if self._finishing:
            await asyncio.wait(list(self._finishing), timeout=timeout_s)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._finishing.discard(task)
        self._changed.set()

    @property
    def hurried(self) -> bool:
        return self._hurry

    def hurry(self) -> None:
        """Stop waiting for requests in flight (a second SIGTERM)."""
        self._hurry = True
        self._changed.set()

    async def wait_idle(self, timeout_s: float, *, hurriable: bool = True) -> bool:
        """True once nothing is in flight; False at the timeout (or when hurried)."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._in_flight and not (hurriable and self._hurry):
                    self._changed.clear()
                    await self._changed.wait()
                while self._finishing:  # quick, and never cut: even a hurried drain waits
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return not self._in_flight

    def cut_all(self) -> int:
        """Cancel every handler still running; each ends its answer as a shutdown."""
        for task, request in list(self._in_flight.items()):
            request[CUT] = True
            task.cancel()
        return len(self._in_flight)


DRAIN = web.AppKey("drain", Drain)


async def shutdown_answer(ctx: RequestContext) -> web.StreamResponse:
    """A request the drain cut: a stream already under way ends with an error event; a request
    whose answer had not started gets 503 `shutting_down` (the error is raised)."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()  # the cut is handled here: the handler goes on to settle and log
    err = shutting_down()
    ctx.error_code = err.code
    response: web.StreamResponse | None = ctx.request.get(PREPARED)
    if response is None:
        ctx.status, ctx.outcome = err.status, "shutdown"
        raise err
    ctx.outcome = "stream_interrupted"  # billed like any stream cut short
    err.message = "The gateway shut down before the stream was complete."
    # The relay sends whole events only (see gateway.respond.relay_stream), and a write is
    # never cut half-way: the error event starts on a boundary.
    with suppress(ConnectionError):
        await response.write(ctx.dialect.stream_error_event(err))
        await response.write_eof()
    return response


async def drain(
    app: web.Application, runner: web.BaseRunner, sites: Sequence[web.BaseSite], timeout_s: float
) -> None:
    """Stop listening, wait for the requests in flight up to `timeout_s`, cut what is left,
    let it settle, then run the app's cleanup (store, sessions, request log)."""
    state = app[DRAIN]
    state.draining = True
    _log.info("draining", in_flight=state.in_flight, timeout_s=timeout_s)
    for site in sites:
        await site.stop()
    if not await state.wait_idle(timeout_s):
        cut = state.cut_all()
        if state.hurried:  # a second SIGTERM, before the deadline
            _log.warning("drain_hurried", cut=cut, timeout_s=timeout_s)
        else:
            _log.warning("drain_timeout", cut=cut, timeout_s=timeout_s)
        if not await state.wait_idle(CUT_GRACE_S, hurriable=False):
            _log.error("drain_incomplete", still_in_flight=state.in_flight)
    _log.info("drained")
    await runner.cleanup()

"""Commands issued while others are on their way travel to Redis together, in one pipeline.

Under load many requests want the store at the same moment (a reservation here, a settle or
a cache read there). Sent one by one, each costs a write, a read and the client's per-command
work; coalesced, one round trip carries them all. A command issued while nothing is in flight
leaves at once; those issued while a batch is out leave together at the end of the loop turn
(see `Coalescer._idle`). Each caller still awaits its own reply, in the order it asked, with
its own error: nothing is deferred past the current loop turn, so what a request observes is
unchanged. Commands nobody waits on (a cache write, the request log: see BACKGROUND) wait a
few milliseconds for company instead.

The batches go over one connection that the client reads and writes itself (an asyncio
protocol with hiredis's parser: gateway.store.wire): a batch is written as soon as it is
ready, even while earlier ones wait for their replies, and each reply goes straight from the
socket to its caller. redis-py opens the connection (address, TLS, AUTH, SELECT) and runs
every command that must not share it (see _ALONE).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

from redis.asyncio import Redis
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import ConnectionError, ResponseError

from gateway.store.wire import Orphan, Sent, Wire

# Commands that wait on the server, or change the connection they run on, never share a
# pipeline: one of them would hold up (or alter) every command queued beside it.
_ALONE = frozenset(
    {
        b"BLPOP",
        b"BRPOP",
        b"BLMOVE",
        b"BLMPOP",
        b"BRPOPLPUSH",
        b"BZPOPMIN",
        b"BZPOPMAX",
        b"BZMPOP",
        b"XREAD",
        b"XREADGROUP",
        b"WAIT",
        b"WAITAOF",
        b"SUBSCRIBE",
        b"PSUBSCRIBE",
        b"SSUBSCRIBE",
        b"MONITOR",
        b"SELECT",
        b"AUTH",
        b"HELLO",
        b"CLIENT",
        b"MULTI",
        b"EXEC",
        b"WATCH",
        b"UNWATCH",
        b"QUIT",
        b"SHUTDOWN",
    }
)

# Options redis-py reads itself rather than pass to a reply's callback.
_NOT_FOR_CALLBACKS = frozenset({EMPTY_RESPONSE, NEVER_DECODE, "keys"})

# Work nobody waits on (a cache write after its answer was sent, the request log) sets this
# in its own task: its commands wait, up to BACKGROUND_DELAY_S, to travel with the next batch
# of commands a request is waiting on, rather than cost a round trip of their own.
BACKGROUND: ContextVar[bool] = ContextVar("store_background", default=False)
BACKGROUND_DELAY_S = 0.005

# A caller that must learn what its command did even if it is cancelled while waiting (a
# budget reservation: what the store holds must be settled) sets this around the call: a
# reply that comes after its caller has gone is handed to this function (the reply, or the
# exception the caller would have got), at once, in the callback that reads it. See
# `coalesced`: only a coalesced client does.
ON_ORPHAN: ContextVar[Orphan | None] = ContextVar("store_on_orphan", default=None)

Send = Callable[..., Awaitable[Any]]
Future = asyncio.Future[Any]
_Queued = tuple[tuple[Any, ...], dict[str, Any], Future, Orphan | None]


def _name(command: Any) -> bytes:
    raw = command.encode() if isinstance(command, str) else bytes(command)
    return raw.split(b" ", 1)[0].upper()


def _alone(command: Any) -> bool:
    """Whether the command must not share a pipeline (remembered per command name)."""
    known = _ALONE_BY_NAME.get(command)
    if known is None:
        known = _name(command) in _ALONE
        if len(_ALONE_BY_NAME) < 1000:  # command names come from code, but stay bounded
            _ALONE_BY_NAME[command] = known
    return known


_ALONE_BY_NAME: dict[Any, bool] = {}


class Coalescer:
    """Stands in for one client's `execute_command`."""

    __slots__ = (
        "_callbacks",
        "_client",
        "_connecting",
        "_later",
        "_loop",
        "_queue",
        "_send",
        "_timeout_s",
        "_unsent",
        "_waiting",
        "_wire",
        "on_unheard",
    )

    def __init__(self, client: Redis, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._send: Send = client.execute_command
        self._callbacks: Mapping[Any, Callable[..., Any]] = client.response_callbacks
        self._queue: list[_Queued] = []  # sent at the end of this turn
        self._waiting: list[_Queued] = []  # background commands: sent with the next batch
        # The loop a flush is scheduled on (None: none is), so that a client carried over to
        # a new event loop never waits on a flush its old loop will not run.
        self._loop: asyncio.AbstractEventLoop | None = None
        # The timer that sends background commands no other batch took along, and its loop.
        self._later: tuple[asyncio.TimerHandle, asyncio.AbstractEventLoop] | None = None
        # The one connection every batch is written to (None until the first command, and
        # after it broke), the task opening it, and the commands waiting for it.
        self._wire: Wire | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._unsent: list[Sent] = []
        # Told the failure's name when the store failed commands whose callers had all gone
        # (the failure would otherwise reach no one: see `_fail`).
        self.on_unheard: Callable[[str], None] | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        # (NEVER_DECODE: a reply that must stay bytes on a decoding client; redis-py reads it)
        if not args or _alone(args[0]) or NEVER_DECODE in options:
            async with asyncio.timeout(self._timeout_s):
                return await self._send(*args, **options)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        orphan = ON_ORPHAN.get()
        if BACKGROUND.get():
            self._waiting.append((args, options, future, orphan))
            if self._loop is not loop and (self._later is None or self._later[1] is not loop):
                self._later = (loop.call_later(BACKGROUND_DELAY_S, self._flush), loop)
        else:
            self._queue.append((args, options, future, orphan))
            if self._loop is not loop:  # the first of this turn's commands
                if self._idle(loop):
                    self._flush()
                else:
                    self._loop = loop
                    loop.call_soon(self._flush)
        if orphan is None:
            return await future
        try:
            return await future
        except asyncio.CancelledError:
            if not future.cancelled():  # the reply came in just before the cancellation
                orphan(future.exception() or future.result())
            raise  # else the reply, when it comes, goes to `orphan` (see Sent)

    def _idle(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether nothing is on its way to the store or back. A command then leaves at once:
        sent at the end of the turn, it would wait behind every callback queued before it
        (under bursts, other requests' work), and its reply after them. Commands issued while
        a batch is out wait for the turn's end and leave together (Nagle's rule): under load
        a round trip still carries the commands of many requests. Behind a 50 ms provider, 16
        clients: a cache miss's median 1 to 3 ms lower, for 4 to 16 % more CPU (more, smaller
        writes). With the core saturated (no provider latency), where batches form anyway,
        0 to 4 % more CPU and up to 6 % fewer requests per second."""
        wire = self._wire
        return wire is not None and wire.loop is loop and not wire.pending

    def _flush(self) -> None:
        """At the end of the turn (or at once, when nothing is in flight): send what was
        queued, and the background commands waiting (or, from the timer, those alone)."""
        self._loop = None
        if self._later is not None:
            self._later[0].cancel()
            self._later = None
        queued = self._queue + self._waiting  # callers waiting first: Redis answers in order
        self._waiting, self._queue = [], []
        batch = [Sent(*item) for item in queued]
        self._transmit(batch)

    def _transmit(self, batch: list[Sent]) -> None:
        """One write for the batch, on the open connection; or, while there is none, queued
        for the one being opened."""
        if not batch:
            return
        loop = asyncio.get_running_loop()
        wire = self._wire
        if wire is not None and wire.loop is not loop:  # a client carried to a new loop
            self._wire = wire = None
        if wire is not None:
            wire.send(batch, loop.time() + self._timeout_s)
            return
        self._unsent += batch
        if self._connecting is None or self._connecting.get_loop() is not loop:
            self._connecting = loop.create_task(self._connect())

    async def _connect(self) -> None:
        """Open the connection as redis-py does (address, TLS, AUTH, SELECT, HELLO), then
        read and write it directly."""
        conn = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(self._timeout_s):
                await conn.connect()
            wire = Wire(self, conn)
        except BaseException as exc:  # every caller waiting for it learns why
            if self._connecting is asyncio.current_task():
                self._connecting = None
            waiting, self._unsent = self._unsent, []
            failure = exc if isinstance(exc, Exception) else ConnectionError("Closed.")
            self._fail(waiting, failure, heard=not isinstance(exc, Exception))
            await conn.disconnect(nowait=True)
            if not isinstance(exc, Exception):
                raise
            return
        if self._connecting is asyncio.current_task():
            self._connecting = None
        self._wire = wire
        waiting, self._unsent = self._unsent, []
        self._transmit(waiting)

    def broken(self, wire: Wire, exc: Exception, retry: bool = True) -> None:
        """The connection failed (closed, unreadable, or a reply overdue): every command on it
        that was not answered is sent once more on a new connection, as redis-py retries a
        connection error; an overdue reply (the store is stuck, not gone) is not retried."""
        if self._wire is wire:
            self._wire = None
        again: list[Sent] = []
        failed: list[Sent] = []
        for item in wire.pending:
            if retry and not item.tries:
                item.tries += 1
                again.append(item)
            else:
                failed.append(item)
        wire.pending.clear()
        self._fail(failed, exc)
        self._transmit(again)

    def _fail(self, items: list[Sent], exc: Exception, heard: bool = False) -> None:
        """Fail `items`, each caller with its own copy of `exc`. A store failure that reached
        no caller (all had given up: a request's deadline, a client gone) is told to
        `on_unheard`, so that a store that never answers is noticed however early its callers
        leave (`heard`: a failure of our own making, not the store's)."""
        unheard = not heard and items
        for item in items:
            if not item.future.done():
                unheard = False
            item.fail(_copy(exc))
        if unheard and self.on_unheard is not None:
            self.on_unheard(type(exc).__name__)

    def answer(self, item: Sent, reply: Any) -> None:
        """One reply, to its caller: an error reply as that command's exception alone."""
        future, options = item.future, item.options
        if future.done():  # the caller is gone
            if item.orphan is not None:
                item.orphan(reply)
            return
        if isinstance(reply, ResponseError):
            if EMPTY_RESPONSE in options:
                future.set_result(options[EMPTY_RESPONSE])
            else:
                future.set_exception(reply)
            return
        callback = self._callbacks.get(item.args[0])
        if callback is None:
            future.set_result(reply)
            return
        if options:
            options = {k: v for k, v in options.items() if k not in _NOT_FOR_CALLBACKS}
        try:
            result = callback(reply, **options)
        except Exception as exc:
            future.set_exception(exc)
            return
        if inspect.isawaitable(result):  # an async callback (none of the core commands')
            waited = asyncio.ensure_future(result)
            waited.add_done_callback(lambda done: _chain(done, future))
        else:
            future.set_result(result)

    async def aclose(self) -> None:
        """Close the connection; callers still waiting get a connection error."""
        exc = ConnectionError("The store client was closed.")
        wire, self._wire = self._wire, None
        if wire is not None:
            closing = list(wire.pending)  # failed here, not as the store's failure
            wire.pending.clear()
            wire.close(exc, retry=False)
            self._fail(closing, exc, heard=True)
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        waiting, self._unsent = self._unsent, []
        self._fail(waiting, exc, heard=True)


def _chain(done: asyncio.Future[Any], future: asyncio.Future[Any]) -> None:
    if future.done():
        return
    if done.cancelled():
        future.cancel()
    elif (exc := done.exception()) is not None:
        future.set_exception(exc)
    else:
        future.set_result(done.result())


def coalescer_of(client: Any) -> Coalescer | None:
    """The coalescer of `client` (or of the client its `execute_command` wraps), if it
    coalesces its commands. Such a client bounds every round trip in time, so that a caller
    needs no timer of its own; hands the replies of cancelled callers to their ON_ORPHAN
    function; and tells its `on_unheard` of the failures no caller was left to see."""
    send = client.execute_command
    send = getattr(send, "__wrapped__", send)
    owner = getattr(send, "__self__", None)
    return owner if isinstance(owner, Coalescer) else None


def coalesced(client: Any) -> bool:
    """Whether `client` coalesces its commands (see `coalescer_of`)."""
    return coalescer_of(client) is not None


def _copy(exc: Exception) -> Exception:
    """A fresh exception per caller: one instance raised in many tasks would collect all
    their tracebacks."""
    try:
        copy = type(exc)(*exc.args)
    except Exception:  # an exception type with another constructor: share the original
        return exc
    copy.__cause__ = exc.__cause__
    return copy


def coalesce(client: Redis, timeout_s: float) -> Redis:
    """Make `client` coalesce its commands (in place) and return it. Every round trip is
    bounded by `timeout_s`, so the client itself needs no socket timeout."""
    coalescer = Coalescer(client, timeout_s)
    # Every command of the client, scripts included, goes through this one method.
    client.execute_command = coalescer.execute_command  # type: ignore[method-assign]
    close = client.aclose

    async def aclose(*args: Any, **kwargs: Any) -> None:
        await coalescer.aclose()
        await close(*args, **kwargs)

    client.aclose = aclose  # type: ignore[method-assign]
    return client

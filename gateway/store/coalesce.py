"""Commands issued in the same event-loop turn travel to Redis together, in one pipeline.

Under load many requests want the store at the same moment (a reservation here, a settle or
a cache read there). Sent one by one, each costs a write, a read and the client's per-command
work; coalesced, one round trip carries them all. Each caller still awaits its own reply, in
the order it asked, with its own error: nothing is deferred past the current loop turn, so
what a request observes is unchanged. Commands nobody waits on (a cache write, the request
log: see BACKGROUND) wait a few milliseconds for company instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

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

# hiredis (optional: redis-py uses it to parse replies when it is installed) packs commands
# in C, several times faster. It packs bytes, str (UTF-8), int and float exactly as redis-py
# does, and refuses every other type, which then goes through redis-py's encoder.
_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - without hiredis, the pure-Python packer below
    _hiredis_pack = None
_UTF8 = ("utf-8", "strict")

# Work nobody waits on (a cache write after its answer was sent, the request log) sets this
# in its own task: its commands wait, up to BACKGROUND_DELAY_S, to travel with the next batch
# of commands a request is waiting on, rather than cost a round trip of their own.
BACKGROUND: ContextVar[bool] = ContextVar("store_background", default=False)
BACKGROUND_DELAY_S = 0.005

Send = Callable[..., Awaitable[Any]]
_Queued = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


def _name(command: Any) -> bytes:
    raw = command.encode() if isinstance(command, str) else bytes(command)
    return raw.split(b" ", 1)[0].upper()


class Coalescer:
    """Stands in for one client's `execute_command`."""

    __slots__ = (
        "_client",
        "_idle",
        "_later",
        "_loop",
        "_queue",
        "_send",
        "_tasks",
        "_timeout_s",
        "_waiting",
    )

    def __init__(self, client: Redis, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._send: Send = client.execute_command
        self._queue: list[_Queued] = []  # sent at the end of this turn
        self._waiting: list[_Queued] = []  # background commands: sent with the next batch
        # The loop a flush is scheduled on (None: none is), so that a client carried over to
        # a new event loop never waits on a flush its old loop will not run.
        self._loop: asyncio.AbstractEventLoop | None = None
        # The timer that sends background commands no other batch took along, and its loop.
        self._later: tuple[asyncio.TimerHandle, asyncio.AbstractEventLoop] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Connections kept between round trips. Taking one from the pool costs more than the
        # round trip itself (a lock, a check for unread data, bookkeeping); a connection
        # here is clean, as every failed exchange disconnects and returns its own.
        self._idle: list[Any] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if not args or _name(args[0]) in _ALONE:
            async with asyncio.timeout(self._timeout_s):
                return await self._send(*args, **options)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if BACKGROUND.get():
            self._waiting.append((args, options, future))
            if self._loop is not loop and (self._later is None or self._later[1] is not loop):
                self._later = (loop.call_later(BACKGROUND_DELAY_S, self._flush), loop)
        else:
            self._queue.append((args, options, future))
            if self._loop is not loop:
                self._loop = loop
                loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """At the end of the turn: send what was queued during it, and the background
        commands waiting (or, from the timer, those alone)."""
        self._loop = None
        if self._later is not None:
            self._later[0].cancel()
            self._later = None
        queued = self._queue + self._waiting  # callers waiting first: Redis answers in order
        self._waiting, self._queue = [], []
        live = [item for item in queued if not item[2].done()]  # callers already gone
        if not live:
            return
        task = asyncio.get_running_loop().create_task(self._run(live))
        self._tasks.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Queued]) -> None:
        try:
            # One bound for the whole round trip (the client's own timeout would arm a timer
            # for every reply in the batch).
            async with asyncio.timeout(self._timeout_s):
                await self._pipeline(batch)
        except Exception as exc:  # the round trip failed: every caller still waiting learns why
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(_copy(exc))
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise

    async def _pipeline(self, batch: list[_Queued]) -> None:
        """One write, then each reply in order, on one connection: what redis-py's pipeline
        does, without its per-command bookkeeping (which cost more than Redis did)."""
        pool = self._client.connection_pool
        conn = self._idle.pop() if self._idle else await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py: untyped
        left = list(batch)  # the commands not yet answered, in order
        try:
            # As redis-py does: a connection error is retried (once, by the client's policy)
            # on a fresh connection, for the commands not yet answered.
            await conn.retry.call_with_retry(
                lambda: self._exchange(conn, left), lambda _: conn.disconnect()
            )
        except BaseException:
            await conn.disconnect()  # a reply may still be on its way: never reuse it
            await pool.release(conn)
            raise
        self._idle.append(conn)

    async def _exchange(self, conn: Any, left: list[_Queued]) -> None:
        """Each caller has its reply as soon as it is read, not once the batch's last is."""
        await conn.send_packed_command(pack([args for args, _, _ in left], conn.encoder))
        while left:
            args, options, future = left[0]
            try:
                result = await self._client.parse_response(conn, args[0], **options)
            except ResponseError as exc:  # that command's own error, for its caller alone
                result = exc
            del left[0]
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


def pack(commands: list[tuple[Any, ...]], encoder: Any) -> bytes:
    """RESP for several commands, as redis-py encodes them (a command name with a space is
    several words; values other than bytes, str, int and float go through the encoder)."""
    out: list[bytes] = []
    fast = _hiredis_pack is not None and (encoder.encoding, encoder.encoding_errors) == _UTF8
    for command in commands:
        first, rest = command[0], command[1:]
        if (isinstance(first, str) and " " in first) or (
            isinstance(first, bytes) and b" " in first
        ):
            command = (*first.split(), *rest)
        if fast:
            try:
                out.append(_hiredis_pack(command))  # type: ignore[misc]  # fast: it is there
                continue
            except TypeError:  # a type it does not pack (memoryview, bool): as redis-py does
                pass
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, bytes):
                value = arg
            elif isinstance(arg, str):
                value = arg.encode(encoder.encoding, encoder.encoding_errors)
            elif isinstance(arg, int) and not isinstance(arg, bool):
                value = b"%d" % arg
            else:  # floats, memoryviews; booleans and the rest raise DataError there
                value = encoder.encode(arg)
            out.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(out)


def bounded(client: Any) -> bool:
    """Whether every command of `client` is already bounded in time (a coalesced client bounds
    each round trip), so that a caller needs no timer of its own."""
    return isinstance(getattr(client.execute_command, "__self__", None), Coalescer)


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
    return client

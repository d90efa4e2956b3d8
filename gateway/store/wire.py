"""One Redis connection, read and written directly: each batch of commands written as it
comes, each reply handed to its caller as soon as it is read.

redis-py opens the connection (address, TLS, AUTH, SELECT, HELLO); from then on this protocol
owns its transport, with hiredis's reader parsing the replies. Its owner (the store client's
Coalescer, in gateway.store.coalesce) decides what is sent when, and learns of each reply and
of a broken connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import hiredis
from redis._parsers import BaseParser  # its mapping of error replies to exceptions
from redis.exceptions import ConnectionError

from gateway.store.resp import pack_one

# hiredis's reader parses the replies (its packer encodes the commands: see resp).
_MORE = object()  # the reader's "no whole reply yet"
_PUSH = getattr(hiredis, "PushNotification", None)  # RESP3 pushes (hiredis 3.2 and later)
_error = BaseParser.parse_error  # an error reply as redis-py's exception for it

# Who learns a command's outcome if its caller has gone (see ON_ORPHAN in coalesce).
Orphan = Callable[[Any], None]


class Owner(Protocol):
    """What a connection reports to: each reply, and its own failure."""

    def answer(self, item: Sent, reply: Any) -> None: ...

    def broken(self, wire: Wire, exc: Exception, retry: bool = True) -> None: ...


class Sent:
    """A command on its way: its caller, whether it was sent again after a broken link, and
    who learns its outcome if the caller has gone (see ON_ORPHAN)."""

    __slots__ = ("args", "future", "options", "orphan", "tries")

    def __init__(
        self,
        args: tuple[Any, ...],
        options: dict[str, Any],
        future: asyncio.Future[Any],
        orphan: Orphan | None = None,
    ) -> None:
        self.args, self.options, self.future, self.orphan = args, options, future, orphan
        self.tries = 0

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
        elif self.orphan is not None:
            self.orphan(exc)


# How long after finding a batch overdue it is looked at again: a timer, not the next turn
# (uvloop runs a callback due at once before it reads, a timer after).
_REREAD_S = 0.001


class Wire(asyncio.Protocol):
    """One Redis connection: each batch written as it comes, each reply handed to its caller
    as soon as it is read (Redis answers in order). A batch not answered within the timeout
    means the store is stuck: the connection is dropped and its callers fail."""

    def __init__(self, owner: Owner, conn: Any) -> None:
        self.owner, self.conn, self.loop = owner, conn, asyncio.get_running_loop()
        self.pending: deque[Sent] = deque()
        self.deadlines: deque[tuple[float, Sent]] = deque()  # each batch's last command
        self.watch: asyncio.TimerHandle | None = None
        self.overdue: tuple[float, Sent] | None = None  # found past its deadline, looked at again
        self.encoder = conn.encoder
        options: dict[str, Any] = {"replyError": _error, "notEnoughData": _MORE}
        if self.encoder.decode_responses:
            options["encoding"] = self.encoder.encoding
            options["errors"] = self.encoder.encoding_errors
        self.reader = hiredis.Reader(**options)
        # redis-py opened it (and read its handshake) through asyncio streams; from here on
        # this protocol reads it.
        self.transport: asyncio.Transport = conn._writer.transport
        self.transport.set_protocol(self)

    def send(self, batch: list[Sent], deadline: float) -> None:
        encoder, out, sent = self.encoder, [], []
        for item in batch:
            # A caller gone before it was sent: dropped, unless someone waits on its outcome.
            if item.future.done() and item.orphan is None:
                continue
            try:
                out.append(pack_one(item.args, encoder))
            except Exception as exc:  # a value redis-py would not encode: that caller alone
                item.fail(exc)
                continue
            sent.append(item)
        if not sent:
            return
        self.pending.extend(sent)
        self.deadlines.append((deadline, sent[-1]))
        try:
            self.transport.write(b"".join(out))
        except Exception as exc:  # a transport closed under it: as a connection lost
            self.close(ConnectionError(f"Connection to the store lost: {exc}."))
            return
        if self.watch is None:
            self.watch = self.loop.call_at(deadline, self._check)

    def data_received(self, data: bytes) -> None:
        reader, pending, answer = self.reader, self.pending, self.owner.answer
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except Exception as exc:  # not RESP: nothing more on it can be trusted
                self.close(ConnectionError(f"Unreadable reply from the store: {exc}"))
                return
            if reply is _MORE:
                return
            if _PUSH is not None and isinstance(reply, _PUSH):
                continue  # RESP3 pushes answer no command
            if not pending:
                self.close(ConnectionError("A reply from the store that no command asked for."))
                return
            item = pending.popleft()
            deadlines = self.deadlines
            if deadlines and deadlines[0][1] is item:
                deadlines.popleft()
            answer(item, reply)

    def _check(self) -> None:
        """At the oldest batch's deadline: watch the next one; or, found overdue, look once
        more after the loop's next read. A loop held up past the deadline (a long callback, a
        paused machine) may not have read yet a reply that came in time: held up while it
        handled what one read brought, uvloop runs its timers before it reads again."""
        self.watch = None
        overdue, self.overdue = self.overdue, None
        if not self.deadlines:
            return
        oldest = self.deadlines[0]
        now = self.loop.time()
        if oldest[0] > now:
            self.watch = self.loop.call_at(oldest[0], self._check)
        elif oldest is not overdue:
            self.overdue = oldest
            # Relative, not at `now + _REREAD_S`: uvloop's clock counts milliseconds, and a
            # reading one tick later than `now` would make that due at once.
            self.watch = self.loop.call_later(_REREAD_S, self._check)
        else:
            # Stuck, not gone: sending its commands again would only wait longer.
            self.close(TimeoutError("The store did not answer in time."), retry=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(ConnectionError(f"Connection to the store lost: {exc or 'closed by server'}."))

    def close(self, exc: Exception, retry: bool = True) -> None:
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        self.deadlines.clear()
        if not self.transport.is_closing():
            self.transport.abort()
        self.conn._reader = self.conn._writer = None  # closed here; redis-py must not wait on it
        self.owner.broken(self, exc, retry)

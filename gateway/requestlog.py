"""The last N requests in a capped store stream shared by every replica, for the admin view."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from gateway.metrics import Metrics
from gateway.store import Store
from gateway.store.coalesce import BACKGROUND
from gateway.store.scripts import Script

STREAM_KEY = "llmgw:requests"
DEFAULT_SIZE = 1000
SIZE_ENV = "GATEWAY_REQUEST_LOG_SIZE"
# A write never delays a response: it runs after it, and gives up after this long.
WRITE_TIMEOUT_S = 0.25
# Entries are sent this long after the first of them, or at once when this many wait.
FLUSH_S = 0.05
FLUSH_ENTRIES = 100
# Entries waiting on a slow store beyond this many are dropped (and counted), not queued.
MAX_PENDING = 200
_MAX_TEXT = 200  # client-chosen strings (model, path) are cut to this many characters
# The fields a client chooses freely; the others come from the config or a fixed vocabulary
# (the request id a client sends is checked to be short).
_FREE_TEXT = ("method", "path", "model")
_STATUS_CLASSES = frozenset({"1xx", "2xx", "3xx", "4xx", "5xx"})

_log = structlog.get_logger("gateway.requestlog")


class RequestLogUnavailable(Exception):
    """The store did not answer a read of the request log."""


def size_from_env(env: Mapping[str, str] | None = None) -> int:
    """`GATEWAY_REQUEST_LOG_SIZE` (default 1000, at least 1)."""
    raw = (os.environ if env is None else env).get(SIZE_ENV, "")
    try:
        return max(1, int(raw)) if raw else DEFAULT_SIZE
    except ValueError:
        return DEFAULT_SIZE


def status_matches(status: Any, wanted: str) -> bool:
    """`wanted` is a code ("429"), a class ("5xx") or "error" (400 and above)."""
    if not isinstance(status, int):
        return False
    if wanted == "error":
        return status >= 400
    if wanted in _STATUS_CLASSES:
        return status // 100 == int(wanted[0])
    return str(status) == wanted


def valid_status_filter(wanted: str) -> bool:
    return (
        wanted == "error"
        or wanted in _STATUS_CLASSES
        or (wanted.isascii() and wanted.isdigit() and len(wanted) == 3)
    )


class RequestLog:
    """Writes are fire-and-forget (bounded in time and number); reads serve the admin API.

    Entries go to the store together, in one script call, FLUSH_S after the first of them
    (or at once when FLUSH_ENTRIES wait): a request pays for an entry, not for a command.
    """

    def __init__(self, store: Store, metrics: Metrics, size: int, exact_trim: bool) -> None:
        self.size = size
        self._store = store
        self._metrics = metrics
        self._append = Script.load("gateway.store", "lua/log_append.lua")
        # Redis trims `MAXLEN ~` by whole nodes (cheap); the embedded store only trims exactly.
        self._approximate = "0" if exact_trim else "1"
        self._batch: list[bytes] = []  # entries not yet sent
        self._timer: asyncio.TimerHandle | None = None  # sends them
        self._in_flight = 0  # entries sent and not yet answered
        self._pending: set[asyncio.Task[None]] = set()

    def write(self, fields: dict[str, Any], data: bytes | None = None) -> None:
        """Queue one entry; returns at once. `data`: the JSON of `fields`, when made already.
        SECURITY: `fields` hold names, never secrets."""
        if not self._batch:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self._flush)
        for name in _FREE_TEXT:
            value = fields.get(name)
            if value and len(value) > _MAX_TEXT:
                fields, data = {**fields, name: value[:_MAX_TEXT]}, None
        if data is None:
            data = orjson.dumps(fields)
        # `{"time": ..., **fields}`, without building that dict: the time goes before the
        # fields' own JSON object.
        self._batch.append(b'{"time":%.3f,%s' % (time.time(), data[1:]))
        if len(self._batch) >= FLUSH_ENTRIES:
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._batch = self._batch, []
        room = max(0, MAX_PENDING - self._in_flight)
        if len(batch) > room:  # the store is slow: drop what does not fit, and count it
            self._metrics.request_log_dropped.inc(len(batch) - room)
            batch = batch[:room]
        if not batch:
            return
        self._in_flight += len(batch)
        task = asyncio.get_running_loop().create_task(self._write(batch))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, batch: list[bytes]) -> None:
        BACKGROUND.set(True)  # nobody waits on it: it may travel with the next batch
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await self._append.run(
                    self._store, (STREAM_KEY,), (self.size, self._approximate, *batch)
                )
        except (TimeoutError, RedisError, OSError) as exc:
            self._metrics.redis_error("request_log")
            self._metrics.request_log_dropped.inc(len(batch))
            _log.debug("request_log_write_failed", error=type(exc).__name__)
        finally:
            self._in_flight -= len(batch)

    async def recent(
        self, limit: int, key: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first, at most `limit`, filtered by key name and status."""
        count = limit if key is None and status is None else self.size
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S * 4):
                raw = await self._store.xrevrange(STREAM_KEY, count=count)
        except (TimeoutError, RedisError, OSError) as exc:
            self._metrics.redis_error("request_log")
            raise RequestLogUnavailable(type(exc).__name__) from None
        out: list[dict[str, Any]] = []
        for entry_id, data in raw or []:
            row = _row(data)
            if row is None:
                continue
            if key is not None and row.get("key") != key:
                continue
            if status is not None and not status_matches(row.get("status"), status):
                continue
            row["id"] = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            out.append(row)
            if len(out) >= limit:
                break
        return out

    async def aclose(self, wait_s: float = 1.0) -> None:
        """Let queued writes finish briefly, then cancel what is left."""
        if self._batch:
            self._flush()
        pending = list(self._pending)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=wait_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)


def _row(data: Any) -> dict[str, Any] | None:
    """One stream entry's JSON; None for an entry this version cannot read."""
    raw = data.get(b"j") if isinstance(data, dict) else None
    try:
        row = orjson.loads(raw) if isinstance(raw, bytes) else None
    except orjson.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


REQUEST_LOG = web.AppKey("request_log", RequestLog)

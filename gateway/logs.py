"""Structured logging: configured once at start-up, one line per request."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import io
import logging
import math
import sys
import time
from datetime import UTC, datetime
from typing import Any, BinaryIO, TextIO, cast

import orjson
import structlog

from gateway.config import LoggingConfig
from gateway.context import RequestContext
from gateway.pricing import usd

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
# One lazy proxy for every request line: with `cache_logger_on_first_use` it binds once, where
# a `get_logger` per request would build a fresh logger (processors and all) every time.
_request_log = structlog.get_logger("gateway.request")
# With JSON lines at info level (the production setting), the request line is written here
# directly, exactly as the structlog pipeline below renders it, for a fifth of the cost; None:
# through structlog (console lines, another level, or logging not configured).
_direct: BinaryIO | None = None


def configure_logging(config: LoggingConfig) -> None:
    """JSON lines (orjson) by default, a console renderer for humans."""
    global _direct
    renderer: Any
    if config.format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory: Any = structlog.BytesLoggerFactory(cast(BinaryIO, _Unfailing(_buffered_stdout())))
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        factory = structlog.PrintLoggerFactory(cast(TextIO, _Unfailing(sys.stdout)))
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[config.level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # The standard library's records (aiohttp's server, asyncio) go to stderr: as JSON lines
    # too, when the gateway's are, for a log pipeline that parses every line.
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=[
                    structlog.stdlib.add_log_level,
                    structlog.stdlib.add_logger_name,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                ],
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(),
                ],
            )
        )
    logging.basicConfig(level=_LEVELS[config.level], handlers=[handler])
    json_at_info = config.format == "json" and _LEVELS[config.level] <= _LEVELS["info"]
    _direct = _buffered_stdout() if json_at_info else None


def _buffered_stdout() -> BinaryIO:
    """stdout's bytes, buffered, so that the lines of one event-loop turn leave in one write.
    A Python run unbuffered (`-u`, PYTHONUNBUFFERED=1, as in the image) has the raw file
    there, which writes each line at once: one system call per request. The buffer is made
    once and flushed at exit; it leaves stdout itself open."""
    global _stdout
    stream = sys.stdout.buffer
    if not isinstance(stream, io.FileIO):
        return stream  # buffered already (or not a file: a test's capture)
    if _stdout is None or _stdout.fileno() != stream.fileno():
        _stdout = io.BufferedWriter(io.FileIO(stream.fileno(), "wb", closefd=False))
        atexit.register(_flush_quietly, _stdout)
    return _stdout


def _flush_quietly(out: BinaryIO) -> None:
    with contextlib.suppress(OSError, ValueError):  # stdout closed, or a reader gone
        out.flush()


class _Unfailing:
    """stdout for structlog, which writes and flushes each line itself: a line that cannot
    be written (the log's reader gone: a broken pipe) is lost, and the caller goes on (an
    answer, a drain) instead of failing on it."""

    __slots__ = ("__weakref__", "_out")

    def __init__(self, out: Any) -> None:
        self._out = out

    def write(self, data: Any) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._out.write(data)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._out.flush()


_stdout: io.BufferedWriter | None = None  # stdout's buffer, when Python left it unbuffered


def status_sent(ctx: RequestContext) -> int | None:
    """The status the client got: 499, as nginx logs it (and the metrics count it), when it
    left before any."""
    if ctx.status is None and ctx.outcome == "client_disconnected":
        return CLIENT_LEFT
    return ctx.status


CLIENT_LEFT = 499


def request_fields(ctx: RequestContext) -> dict[str, Any]:
    """The fields of a request's log line. SECURITY: names from config only, never secrets.
    Times in milliseconds to two decimals: rounded half up from the hundredth of a
    millisecond, which is round()'s result but on an exact tie, at half the cost."""
    usage = ctx.usage
    elapsed = ctx.elapsed_s()
    ttfb = ctx.ttfb_s
    return {
        "request_id": ctx.request_id,
        "method": ctx.request.method,
        "path": ctx.request.path,
        "key": ctx.key.name if ctx.key else None,
        "route": ctx.route.name if ctx.route else None,
        "provider": ctx.provider.name if ctx.provider else None,
        "model": ctx.upstream_model or ctx.model,
        "stream": ctx.stream,
        "status": status_sent(ctx),
        "outcome": ctx.outcome,
        "error_code": ctx.error_code,
        "attempts": ctx.attempts,
        "latency_ms": int(elapsed * 100_000 + 0.5) / 100,
        "overhead_ms": int(ctx.overhead_s(elapsed) * 100_000 + 0.5) / 100,
        "store_ms": int(ctx.store_wait_s * 100_000 + 0.5) / 100,
        "ttfb_ms": int(ttfb * 100_000 + 0.5) / 100 if ttfb is not None else None,
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "cached_tokens": usage.cached_input_tokens if usage else None,
        "cost_usd": usd(ctx.cost_micro) if ctx.cost_micro is not None else None,
        "cost_source": ctx.cost_source,
        "saved_usd": usd(ctx.saved_micro) if ctx.saved_micro else None,
        "cache": ctx.cache_status,
        "anomalies": ctx.anomalies or None,
    }


def log_request(ctx: RequestContext) -> tuple[dict[str, Any], bytes | None]:
    """Write the request's one log line; returns its fields (the request log stores them)
    and, when the line was made of it, the fields' own JSON object (so is the entry)."""
    fields = request_fields(ctx)
    out = _direct
    if out is None:
        _request_log.info("request", **fields)
        return fields, None
    # `{**fields, "event": "request", "level": "info", "timestamp": ...}`, without building
    # that dict: the last three fields go after the fields' own JSON object.
    data = orjson.dumps(fields)
    ending = b',"event":"request","level":"info","timestamp":"%s"}\n' % utc_timestamp().encode()
    try:
        out.write(data[:-1] + ending)
    except OSError:  # the log's reader gone (a broken pipe): the line is lost, not the answer
        return fields, data
    _flush_at_end_of_turn(out)
    return fields, data


def utc_timestamp(now: float | None = None) -> str:
    """`now` (default: the current time) as structlog's TimeStamper(fmt="iso", utc=True)
    writes it, e.g. 2026-11-26T09:30:00.123456Z; the date and time are formatted once a
    second."""
    frac, whole = math.modf(time.time() if now is None else now)
    second, micro = int(whole), round(frac * 1_000_000)  # as datetime rounds it
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    if _second[0] != second:
        _second[:] = [second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second[1]}.{micro:06d}Z" if micro else f"{_second[1]}Z"


_second: list[Any] = [None, ""]  # the second last formatted, and its date and time


def _flush_at_end_of_turn(out: BinaryIO) -> None:
    """The lines of one event-loop turn leave in one write, at its end (at once outside a
    loop); other log lines share the buffer, so the order holds."""
    global _flush_on
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _flush_quietly(out)
        return
    if _flush_on is not loop:  # none is due on this loop (one that closed never ran its own)
        _flush_on = loop
        loop.call_soon(_flush, out)


def _flush(out: BinaryIO) -> None:
    global _flush_on
    _flush_on = None
    # Once a turn: a `try`, free where nothing fails, not a context manager made each time.
    try:  # noqa: SIM105
        out.flush()
    except (OSError, ValueError):  # stdout closed, or its reader gone: the lines are lost
        pass


_flush_on: asyncio.AbstractEventLoop | None = None  # the loop a flush is due on

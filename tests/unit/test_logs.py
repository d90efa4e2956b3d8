"""The request's log line: written directly for JSON at info level, exactly as structlog's
pipeline renders it; through structlog otherwise."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from gateway import logs
from gateway.config import LoggingConfig, parse_config
from gateway.context import Usage
from gateway.runtime import Runtime
from tests.unit.test_metrics import CONFIG, finished


@pytest.fixture
def runtime() -> Runtime:
    return Runtime.build(parse_config(CONFIG, "<test>"))


@pytest.fixture
def restored() -> Iterator[None]:
    """Logging's configuration (structlog's, the root logger's, the direct writer) as it was
    before the test. The gateway's module-level loggers that cached a logger while the
    test's configuration held (`cache_logger_on_first_use`) forget it: it writes to the
    test's captured output, closed once the test ends."""
    saved = structlog.get_config()
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    structlog.configure(**saved)
    logging.root.handlers[:], logging.root.level = handlers, level
    logs._direct = logs._stdout = None
    proxy = type(structlog.get_logger())
    for module in [m for name, m in sys.modules.items() if name.startswith("gateway")]:
        for value in vars(module).values():
            if type(value) is proxy and "bind" in vars(value):
                del value.bind  # the class's own bind: the logger is built anew on next use


def lines(captured: pytest.CaptureFixture[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in captured.readouterr().out.splitlines()]


@pytest.mark.usefixtures("restored")
def test_the_direct_json_line_is_the_line_structlog_writes(
    capsysbinary: pytest.CaptureFixture[bytes], runtime: Runtime
) -> None:
    logs.configure_logging(LoggingConfig(format="json", level="info"))
    ctx = finished(runtime, usage=Usage(input_tokens=12, output_tokens=3), cost_micro=42)
    assert logs._direct is not None
    fields, _ = logs.log_request(ctx)  # direct
    logs._direct = None
    logs.log_request(ctx)  # through structlog, configured the same way
    direct, piped = lines(capsysbinary)
    assert list(direct) == list(piped)  # the same keys, in the same order
    stamps = [datetime.fromisoformat(line.pop("timestamp")) for line in (direct, piped)]
    assert all(s.tzinfo == UTC for s in stamps)
    assert stamps[1] - stamps[0] < timedelta(seconds=1)
    for line in (direct, piped):
        line.pop("latency_ms")  # the two were written a moment apart
        line.pop("overhead_ms")  # (all of it: this request made no upstream exchange)
    assert direct == piped
    assert (direct["event"], direct["level"]) == ("request", "info")
    assert (direct["input_tokens"], fields["cost_usd"]) == (12, "0.000042")


def test_the_lines_times_are_milliseconds_to_two_decimals(runtime: Runtime) -> None:
    ctx = finished(runtime, store_wait_s=0.0012345, ttfb_s=0.0456789, stream=True)
    fields = logs.request_fields(ctx)
    assert (fields["store_ms"], fields["ttfb_ms"]) == (1.23, 45.68)
    line = orjson.dumps(fields)
    assert b'"store_ms":1.23,' in line
    assert b'"ttfb_ms":45.68,' in line
    ctx.store_wait_s, ctx.ttfb_s = 0.29, 0.0  # 0.29 is a hair below .29 in binary
    fields = logs.request_fields(ctx)
    assert (fields["store_ms"], fields["ttfb_ms"]) == (290.0, 0.0)


@pytest.mark.usefixtures("restored")
@pytest.mark.parametrize(("fmt", "level"), [("console", "info"), ("json", "warning")])
def test_other_settings_go_through_structlog(fmt: str, level: str) -> None:
    logs.configure_logging(LoggingConfig(format=fmt, level=level))
    assert logs._direct is None


@pytest.mark.parametrize(
    "now",
    [
        1764149400.0,  # a whole second: no fraction, as isoformat writes it
        1764149400.5,
        1764149400.000001,
        1764149400.9999996,  # rounds up into the next second
        1740808129.4695885,
        1859738490.1430974,
    ],
)
def test_the_timestamp_is_the_one_datetime_writes(now: float) -> None:
    expected = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    assert logs.utc_timestamp(now) == expected


class _Writes(io.RawIOBase):
    """A file that records each write it receives."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return len(data)


@pytest.mark.usefixtures("restored")
async def test_the_lines_of_one_turn_leave_in_one_write_at_its_end(runtime: Runtime) -> None:
    raw = _Writes()
    logs._direct = io.BufferedWriter(raw)
    ctx = finished(runtime, usage=Usage(input_tokens=12, output_tokens=3), cost_micro=42)
    logs.log_request(ctx)
    logs.log_request(ctx)
    assert raw.writes == []  # not yet: the turn is not over
    await asyncio.sleep(0)
    assert len(raw.writes) == 1
    first, second = raw.writes[0].splitlines()
    assert orjson.loads(first)["request_id"] == orjson.loads(second)["request_id"]
    logs.log_request(ctx)  # the next turn's line gets its own write
    await asyncio.sleep(0)
    assert len(raw.writes) == 2


@pytest.mark.usefixtures("restored")
async def test_an_unbuffered_python_still_writes_a_turns_lines_together(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -u` and PYTHONUNBUFFERED=1 (the image sets it) leave stdout's bytes raw: each
    line would be a system call of its own. The gateway buffers them itself."""
    path = tmp_path / "stdout"
    raw = io.FileIO(path, "wb")
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, write_through=True))  # as -u
    logs.configure_logging(LoggingConfig(format="json", level="info"))
    ctx = finished(runtime, usage=Usage(input_tokens=12, output_tokens=3), cost_micro=42)
    logs.log_request(ctx)
    logs.log_request(ctx)
    assert path.read_bytes() == b""  # not yet: the turn is not over
    await asyncio.sleep(0)
    assert len(path.read_bytes().splitlines()) == 2
    structlog.get_logger("gateway.test").warning("other")  # other lines: the same buffer
    assert orjson.loads(path.read_bytes().splitlines()[2])["event"] == "other"
    assert not raw.closed
    raw.close()


@pytest.mark.usefixtures("restored")
def test_a_flush_left_due_on_a_closed_loop_does_not_hold_later_lines(runtime: Runtime) -> None:
    raw = _Writes()
    logs._direct = io.BufferedWriter(raw)
    ctx = finished(runtime, usage=Usage(input_tokens=12, output_tokens=3), cost_micro=42)
    first = asyncio.new_event_loop()

    def log_and_stop() -> None:
        logs.log_request(ctx)  # its flush is due next turn, which this loop never runs
        first.stop()

    first.call_soon(log_and_stop)
    first.run_forever()
    first.close()
    assert raw.writes == []
    second = asyncio.new_event_loop()
    try:
        second.run_until_complete(_log_then_yield(ctx))
    finally:
        second.close()
    assert len(b"".join(raw.writes).splitlines()) == 2  # both lines are out


async def _log_then_yield(ctx: Any) -> None:
    logs.log_request(ctx)
    await asyncio.sleep(0)


def test_the_standard_librarys_records_are_json_lines_on_stderr_with_json_logging() -> None:
    """aiohttp's and asyncio's own records (a refused request, an error) are parsed by the
    same log pipeline as the gateway's lines: JSON, with level, logger and time."""
    script = (
        "import logging\n"
        "from gateway.config import LoggingConfig\n"
        "from gateway.logs import configure_logging\n"
        "configure_logging(LoggingConfig(format='json'))\n"
        "logging.getLogger('aiohttp.server').info('malformed request refused: %s', 'X')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n"
        "    logging.getLogger('asyncio').exception('failed')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, check=True, timeout=60
    )
    lines = [orjson.loads(line) for line in done.stderr.splitlines()]
    assert [(x["event"], x["level"], x["logger"]) for x in lines] == [
        ("malformed request refused: X", "info", "aiohttp.server"),
        ("failed", "error", "asyncio"),
    ]
    assert "ZeroDivisionError" in lines[1]["exception"]
    assert all(x["timestamp"].endswith("Z") for x in lines)

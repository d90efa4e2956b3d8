"""Incremental server-sent-events parsing, for reading what passes through a stream."""

from __future__ import annotations

import re

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class SSEParser:
    """Feed raw bytes as they arrive; get back complete events as (event name, data) pairs."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        self._buffer += chunk
        events: list[tuple[str, bytes]] = []
        while True:
            match = _BOUNDARY.search(self._buffer)
            if match is None:
                return events
            raw, self._buffer = self._buffer[: match.start()], self._buffer[match.end() :]
            event = _parse_event(raw)
            if event is not None:
                events.append(event)


def _parse_event(raw: bytes) -> tuple[str, bytes] | None:
    name = "message"
    data: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    if not data:
        return None
    return name, b"\n".join(data)

"""Server-sent events: parsed as they arrive, to read what passes through a stream, and cut at
event boundaries, to relay a stream in whole events."""

from __future__ import annotations

import re
from collections.abc import Callable

# The end of an event: the end of its last line, the blank line, and any blank lines after.
# A line ends with CRLF, LF or CR, and a stream may mix them.
_EVENT_END = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)[\r\n]*")


class SSEParser:
    """Feed raw bytes as they arrive; get back complete events as (event name, data) pairs."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(
        self, chunk: bytes, wanted: Callable[[bytes], bool] | None = None
    ) -> list[tuple[str, bytes]]:
        """With `wanted`: when it says no event in the bytes held so far can matter (it sees
        them as sent, the incomplete last one included), their complete events are taken
        without being parsed, and none is returned."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if wanted is not None and b"\r" not in buffer and not wanted(buffer):
            cut = buffer.rfind(b"\n\n")
            self._buffer = buffer if cut < 0 else buffer[cut + 2 :]
            return []
        events: list[tuple[str, bytes]] = []
        if b"\r" not in buffer:  # the usual stream: events end with a blank line, "\n\n"
            *complete, self._buffer = buffer.split(b"\n\n")  # a tenth of the regex's cost
            for raw in complete:
                if raw.startswith(b"data: ") and b"\n" not in raw:  # one data line
                    events.append(("message", raw[6:]))
                elif (event := _parse_event(raw)) is not None:
                    events.append(event)
            return events
        start = 0
        for match in _EVENT_END.finditer(buffer):  # the rest is kept once, not once an event
            event = _parse_event(buffer[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._buffer = buffer[start:]
        return events


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


# Bytes that end with a blank line end with one of these, whatever the line endings (a line
# ends with CRLF, LF or CR): LF LF or CRLF LF, CRLF CRLF or LF CRLF, CR CRLF, CR CR, LF CR or
# CRLF CR. A CR at the very end may still have its LF to come: its line has ended either way.
_BLANK_ENDINGS = (b"\n\n", b"\n\r\n", b"\r\r\n", b"\r\r", b"\n\r")
_LF, _CR = 10, 13


class WholeEvents:
    """Cuts a stream's reads at event boundaries: `take` gives back every event complete so
    far and holds the incomplete last one until its end arrives. A client can use no part of
    an event before its end, so holding it back delays nothing usable; and when the stream
    then fails, what the client has ends on a boundary, where an error event can follow."""

    __slots__ = ("_held", "events")

    def __init__(self) -> None:
        # The start of an event whose end has not arrived, as read: joined once, at its end
        # (an event may be large, a Responses API `response.completed`, and come in many reads).
        self._held: list[bytes] = []
        self.events = 0  # given out whole

    def take(self, chunk: bytes) -> bytes:
        """The complete events among the bytes read so far, in order, each once."""
        if chunk.endswith(b"\n\n") and not self._held:  # the usual read: passed on as read
            self.events += chunk.count(b"\n\n")
            return chunk
        held = self._held
        if chunk.endswith(_BLANK_ENDINGS):
            end = len(chunk)
        else:
            end = blank_end(chunk, held[-1][-1] if held else -1)
            if end == 0:
                held.append(chunk)
                return b""
        complete = chunk if end == len(chunk) else chunk[:end]
        if held:
            held.append(complete)
            complete = b"".join(held)
            held.clear()
        if end < len(chunk):
            held.append(chunk[end:])
        self.events += count_events(complete)
        return complete

    def rest(self) -> bytes:
        """What is held, as it came: at the stream's end, its last event without a blank line
        after it (which goes to the client as the provider sent it)."""
        rest = b"".join(self._held)
        self._held.clear()
        return rest


def blank_end(data: bytes, before: int = -1) -> int:
    """Where the last blank line in `data` ends (0 when it has none). `before` is the byte read
    just before `data` (-1: none), with which its first byte may make one.

    Each blank line holds LF LF, LF CR or CR CR, and each of those pairs is one (the pair
    that is not, CR LF, is one line ending). A stream with LF line endings has no CR: one
    search from the end finds its last blank line."""
    cut = data.rfind(b"\n\n")
    if data.find(b"\r", cut + 1) >= 0:  # a line ended with CR or CRLF after it
        cut = max(cut, data.rfind(b"\n\r"), data.rfind(b"\r\r"))
    if cut >= 0:
        end = cut + 2
        if data[end - 1] == _CR and data[end : end + 1] == b"\n":  # the CR of a CRLF
            end += 1
        return end
    if before in (_LF, _CR) and data[:1] in (b"\n", b"\r") and (before, data[0]) != (_CR, _LF):
        return 2 if data[:2] == b"\r\n" else 1
    return 0


def count_events(events: bytes) -> int:
    """The events that end in `events` (complete events): one per blank line. A stream's
    server writes every event alike: the LF and CRLF forms are counted with one pass."""
    if events.endswith(b"\n\n"):
        return events.count(b"\n\n")
    if events.endswith(b"\r\n\r\n"):
        return events.count(b"\r\n\r\n")
    return len(_EVENT_END.findall(events))


def split_events(events: bytes) -> list[bytes]:
    """Each event of `events` with the blank line that ends it; the last, at a stream's end,
    may have none."""
    pieces: list[bytes] = []
    start = 0
    for end in _EVENT_END.finditer(events):
        pieces.append(events[start : end.end()])
        start = end.end()
    if start < len(events):
        pieces.append(events[start:])
    return pieces

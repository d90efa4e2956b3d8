"""Usage read from buffered answers and from streams, for both provider formats."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from types import SimpleNamespace
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ProviderConfig
from gateway.context import RequestContext, Usage
from gateway.providers import build_provider
from gateway.sse import SSEParser, WholeEvents, count_events
from gateway.stages.usage import UsageStrip

OPENAI = build_provider("o", ProviderConfig(kind="openai", base_url="http://x/v1"))
ANTHROPIC = build_provider("a", ProviderConfig(kind="anthropic", base_url="http://x"))


def test_openai_chat_usage_includes_cached_tokens() -> None:
    body = {
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 64},
        }
    }
    assert OPENAI.usage_from_body(body) == Usage(100, 7, 64, 0)


def test_openai_responses_and_embeddings_usage_shapes() -> None:
    responses = {"usage": {"input_tokens": 9, "output_tokens": 3}}
    embeddings = {"usage": {"prompt_tokens": 5, "total_tokens": 5}}
    assert OPENAI.usage_from_body(responses) == Usage(9, 3, 0, 0)
    assert OPENAI.usage_from_body(embeddings) == Usage(5, 0, 0, 0)
    assert OPENAI.usage_from_body({"id": "x"}) is None


def test_token_counts_that_are_not_counts_read_as_zero() -> None:
    body = {"usage": {"prompt_tokens": -100, "completion_tokens": True, "total_tokens": "7"}}
    assert OPENAI.usage_from_body(body) == Usage(0, 0, 0, 0)
    body = {"usage": {"input_tokens": 10, "output_tokens": -4, "cache_read_input_tokens": -3}}
    assert ANTHROPIC.usage_from_body(body) == Usage(10, 0, 0, 0)


def test_anthropic_usage_adds_cache_reads_and_writes_to_input() -> None:
    body = {
        "usage": {
            "input_tokens": 10,
            "output_tokens": 4,
            "cache_read_input_tokens": 50,
            "cache_creation_input_tokens": 20,
        }
    }
    assert ANTHROPIC.usage_from_body(body) == Usage(80, 4, 50, 20)


def test_openai_stream_usage_from_final_chunk_split_across_reads() -> None:
    reader = OPENAI.stream_usage_reader()
    stream = (
        b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2}}\n\n'
        b"data: [DONE]\n\n"
    )
    for i in range(0, len(stream), 7):  # arbitrary network chunking
        reader.feed(stream[i : i + 7])
        assert reader.final == (reader.usage is not None)  # the one report is the last
    assert reader.usage == Usage(12, 2, 0, 0)


def test_anthropic_stream_usage_from_message_start_and_delta() -> None:
    reader = ANTHROPIC.stream_usage_reader()
    reader.feed(
        b"event: message_start\n"
        b'data: {"type":"message_start","message":{"usage":{"input_tokens":30,'
        b'"output_tokens":1,"cache_read_input_tokens":5}}}\n\n'
    )
    assert (reader.usage, reader.final) == (Usage(35, 1, 5, 0), False)  # the input only
    reader.feed(
        b"event: message_delta\n"
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":42}}\n\n'
    )
    assert (reader.usage, reader.final) == (Usage(35, 42, 5, 0), True)


def test_anthropic_stream_usage_takes_the_cumulative_input_of_message_delta() -> None:
    """With a server tool (web search), the input grows during the answer: message_delta
    reports the totals, as the final message of the same answer would."""
    reader = ANTHROPIC.stream_usage_reader()
    reader.feed(
        b"event: message_start\n"
        b'data: {"type":"message_start","message":{"usage":{"input_tokens":2679,'
        b'"cache_creation_input_tokens":0,"cache_read_input_tokens":100,"output_tokens":3}}}\n\n'
        b"event: message_delta\n"
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"input_tokens":10682,"cache_creation_input_tokens":null,'
        b'"cache_read_input_tokens":400,"output_tokens":510,'
        b'"server_tool_use":{"web_search_requests":1}}}\n\n'
    )
    final = {"input_tokens": 10682, "cache_read_input_tokens": 400, "output_tokens": 510}
    assert reader.usage == ANTHROPIC.usage_from_body({"usage": final})
    assert reader.usage == Usage(11082, 510, 400, 0)


def test_sse_parser_handles_crlf_and_multiline_data() -> None:
    events = SSEParser().feed(b"event: x\r\ndata: a\r\ndata: b\r\n\r\n: comment\n\n")
    assert events == [("x", b"a\nb")]


EVENT = st.tuples(
    st.sampled_from([None, "message_start", "delta"]),
    st.lists(
        st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        min_size=1,
        max_size=3,
    ),
)


def _endings(choices: list[bytes]) -> Iterator[bytes]:
    """Line endings taken in turn from `choices`; a CR is never followed by a lone LF, which
    a reader takes with it as one CRLF."""
    before = b""
    for ending in itertools.cycle(choices):
        if before == b"\r" and ending == b"\n":
            ending = b"\r\n"
        yield ending
        before = ending


@given(
    events=st.lists(EVENT, max_size=8),
    newlines=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_sse_events_do_not_depend_on_how_the_stream_is_cut(
    events: list[tuple[str | None, list[bytes]]], newlines: list[bytes], cuts: list[int]
) -> None:
    """Whatever its line endings, one kind throughout or mixed line by line."""
    ending = _endings(newlines)
    raw = b"".join(
        (b"event: " + name.encode() + next(ending) if name else b"")
        + b"".join(b"data: " + line + next(ending) for line in lines)
        + next(ending)
        for name, lines in events
    )
    expected = [(name or "message", b"\n".join(lines)) for name, lines in events]
    parser, got, start = SSEParser(), [], 0
    for cut in sorted({c for c in cuts if c < len(raw)}):
        got += parser.feed(raw[start:cut])
        start = cut
    got += parser.feed(raw[start:])
    assert got == expected


def _pieces(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted({c for c in cuts if 0 < c < len(raw)}), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(points)]


TOKEN = st.text(alphabet="ab []{}:,usage", max_size=8).map(
    lambda t: b'data: {"choices":[{"delta":{"content":"' + t.encode() + b'"}}],"usage":null}'
)


def _usage_event(prompt: int, completion: int, split: bool) -> bytes:
    body = b'{"prompt_tokens":%d,"completion_tokens":%d}' % (prompt, completion)
    if split:  # one JSON object over two data lines, split where the raw bytes hide it
        return b'data: {"choices":[],"usage"\ndata: :' + body + b"}"
    return b'data: {"choices":[],"usage":' + body + b"}"


@given(
    tokens=st.lists(TOKEN, max_size=12),
    reports=st.lists(
        st.tuples(st.integers(0, 999), st.integers(0, 999), st.booleans()), max_size=2
    ),
    comment=st.booleans(),
    newline=st.sampled_from([b"\n", b"\r\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=900), max_size=16),
)
def test_stream_usage_does_not_depend_on_how_the_stream_is_cut(
    tokens: list[bytes],
    reports: list[tuple[int, int, bool]],
    comment: bool,
    newline: bytes,
    cuts: list[int],
) -> None:
    events = [*tokens, *(_usage_event(*r) for r in reports), b"data: [DONE]"]
    if comment:
        events.insert(len(events) // 2, b": keep-alive")
    raw = b"".join(e.replace(b"\n", newline) + newline + newline for e in events)
    reader = OPENAI.stream_usage_reader()
    for piece in _pieces(raw, cuts):
        reader.feed(piece)
    last = reports[-1] if reports else None
    assert reader.usage == (Usage(last[0], last[1], 0, 0) if last else None)


def _relay(raw: bytes, cuts: list[int]) -> tuple[list[bytes], bytes, int]:
    """What the relay sends of `raw` read in pieces: the whole events of each read, what is
    left at the end, and the events counted."""
    frames = WholeEvents()
    sent = [events for piece in _pieces(raw, cuts) if (events := frames.take(piece))]
    return sent, frames.rest(), frames.events


def _strip(ctx: SimpleNamespace, sent: list[bytes], rest: bytes) -> bytes:
    strip = UsageStrip()
    return b"".join(strip(cast(RequestContext, ctx), events) for events in [*sent, rest] if events)


@given(
    tokens=st.lists(TOKEN, max_size=12),
    usage=st.booleans(),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    spaced=st.booleans(),
    last_blank=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=900), max_size=16),
)
def test_the_usage_chunk_the_gateway_asked_for_is_taken_out_however_the_stream_is_cut(
    tokens: list[bytes],
    usage: bool,
    newline: bytes,
    spaced: bool,
    last_blank: bool,
    cuts: list[int],
) -> None:
    """In every line-ending form, with `"usage": null` spelled either way, and with or without
    a blank line after the last event."""
    events = [*tokens, *([_usage_event(5, 7, False)] if usage else []), b"data: [DONE]"]
    if spaced:
        events = [e.replace(b',"usage":null', b', "usage": null') for e in events]
    raw = b"".join(e + newline + newline for e in events)
    if not last_blank:
        raw = raw.removesuffix(newline)
    sent, rest, counted = _relay(raw, cuts)
    out = _strip(SimpleNamespace(), sent, rest)
    kept = [e for e in events if e != _usage_event(5, 7, False)]
    expected = b"".join(
        e.replace(b',"usage":null', b"").replace(b', "usage": null', b"") + newline + newline
        for e in kept
    )
    assert out == (expected if last_blank else expected.removesuffix(newline))
    assert counted == len(events) - (0 if last_blank else 1)


def test_the_usage_null_field_is_taken_out_however_it_is_spaced() -> None:
    ctx = SimpleNamespace()
    events = (
        b'data: {"id":"a", "choices":[], "usage" : null}\n\n'
        b'data: {"usage": null, "id":"b","choices":[{"delta":{"content":"\\"usage\\""}}]}\n\n'
    )
    assert UsageStrip()(cast(RequestContext, ctx), events) == (
        b'data: {"id":"a", "choices":[]}\n\n'
        b'data: {"id":"b","choices":[{"delta":{"content":"\\"usage\\""}}]}\n\n'
    )


LINE = st.binary(min_size=1, max_size=10).map(lambda b: b.replace(b"\r", b"x").replace(b"\n", b"x"))
ENDING = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def _event_stream(draw: st.DrawFn) -> bytes:
    """Events of one to three lines, each line and each blank line with a line ending of its
    own (a CR never followed by an LF ending: that pair is one CRLF)."""
    raw = b""
    for _ in range(draw(st.integers(0, 6))):
        for _ in range(draw(st.integers(1, 3))):
            raw += draw(LINE) + draw(ENDING)
        blank = draw(ENDING)
        if raw.endswith(b"\r") and blank == b"\n":
            blank = b"\r\n"
        raw += blank
    if draw(st.booleans()):  # the last event without its blank line, or cut mid-line
        raw += draw(LINE) + draw(st.sampled_from([b"", b"\n", b"\r\n", b"\r"]))
    return raw


def _blank_line_ends(raw: bytes) -> list[int]:
    """Where each blank line ends, read line by line as the SSE spec reads a stream."""
    ends, i, line_start = [], 0, 0
    while i < len(raw):
        if raw[i] in b"\r\n":
            after = i + 2 if raw[i : i + 2] == b"\r\n" else i + 1
            if i == line_start:
                ends.append(after)
            i = line_start = after
        else:
            i += 1
    return ends


@given(raw=_event_stream(), cuts=st.lists(st.integers(0, 300), max_size=20))
def test_the_relay_sends_whole_events_as_soon_as_they_are_complete(
    raw: bytes, cuts: list[int]
) -> None:
    """Each write ends on a blank line (or at most the LF of its CRLF short of it), every
    event complete in the bytes read so far has gone, and nothing is lost or reordered."""
    ends = _blank_line_ends(raw)
    allowed = {0, *ends, *(e - 1 for e in ends if raw[e - 2 : e] == b"\r\n")}
    frames, sent, read = WholeEvents(), b"", 0
    for piece in _pieces(raw, cuts):
        sent += frames.take(piece)
        read += len(piece)
        assert len(sent) in allowed
        assert len(sent) >= max((e for e in ends if e <= read), default=0) - 1
    assert sent + frames.rest() == raw


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_a_read_that_ends_on_a_blank_line_goes_out_as_read(newline: bytes) -> None:
    chunk = b"data: 1" + newline + newline + b"data: 2" + newline + newline
    assert WholeEvents().take(chunk) is chunk
    assert count_events(chunk) == 2

"""Usage read from buffered answers and from streams, for both provider formats."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ProviderConfig
from gateway.context import Usage
from gateway.providers import build_provider
from gateway.sse import SSEParser

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
    assert reader.usage == Usage(12, 2, 0, 0)
    assert reader.events == 3


def test_anthropic_stream_usage_from_message_start_and_delta() -> None:
    reader = ANTHROPIC.stream_usage_reader()
    reader.feed(
        b"event: message_start\n"
        b'data: {"type":"message_start","message":{"usage":{"input_tokens":30,'
        b'"output_tokens":1,"cache_read_input_tokens":5}}}\n\n'
        b"event: message_delta\n"
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":42}}\n\n'
    )
    assert reader.usage == Usage(35, 42, 5, 0)


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


@given(
    events=st.lists(EVENT, max_size=8),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_sse_events_do_not_depend_on_how_the_stream_is_cut(
    events: list[tuple[str | None, list[bytes]]], newline: bytes, cuts: list[int]
) -> None:
    raw = b"".join(
        (b"event: " + name.encode() + newline if name else b"")
        + b"".join(b"data: " + line + newline for line in lines)
        + newline
        for name, lines in events
    )
    expected = [(name or "message", b"\n".join(lines)) for name, lines in events]
    parser, got, start = SSEParser(), [], 0
    for cut in sorted({c for c in cuts if c < len(raw)}):
        got += parser.feed(raw[start:cut])
        start = cut
    got += parser.feed(raw[start:])
    assert got == expected

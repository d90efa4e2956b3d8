"""The mock provider's pure parts: answer rules, token counts, prompt reading, steps, state."""

from __future__ import annotations

import base64
import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.mock import MockState, RecordedRequest, ScriptStep
from gateway.mock import state as state_module
from gateway.mock.answers import (
    Prompt,
    answer_text,
    compose,
    prompt_tokens,
    split_pieces,
    text_tokens,
)
from gateway.mock.control import STEP_FIELD_TYPES, step_from_json
from gateway.mock.embeddings import encode, float32_bytes
from gateway.mock.faults import MockError, cached_tokens, step_from_headers
from gateway.mock.prompts import (
    anthropic_prompt,
    chat_prompt,
    completion_prompt,
    embedding_inputs,
    responses_prompt,
)


def user(text: str, system: str = "") -> Prompt:
    texts = (system, text) if system else (text,)
    return Prompt(texts=texts, last_user=text)


# --- answer rules ---------------------------------------------------------------------


def test_answer_reply_wins_over_mock_reply_line() -> None:
    assert answer_text(user("mock-reply: from line"), "scripted") == "scripted"


def test_answer_mock_reply_line_anywhere_gives_rest_of_line() -> None:
    prompt = user("question?", system="You are terse.\nmock-reply: Paris is the capital.  \nx")
    assert answer_text(prompt, None) == "Paris is the capital."


def test_answer_mock_reply_line_beats_sentiment() -> None:
    assert answer_text(user("sentiment of this\nmock-reply: fixed"), None) == "fixed"


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I love it, great and fast!", "positive"),
        ("Terrible, slow, I want a refund.", "negative"),
        ("It arrived on Tuesday.", "neutral"),
        ("good but bad", "neutral"),
        ("LOVED it but never again, awful", "negative"),
    ],
)
def test_answer_sentiment_counts_word_lists_in_last_user_text(text: str, label: str) -> None:
    prompt = user(text, system="Classify the sentiment.")
    assert answer_text(prompt, None) == f"The sentiment of this text is {label}."


def test_answer_sentiment_reads_only_last_user_text() -> None:
    chat = chat_prompt(
        {
            "messages": [
                {"role": "system", "content": "Give the sentiment. I love examples."},
                {"role": "user", "content": "awful"},
                {"role": "assistant", "content": "great great great"},
                {"role": "user", "content": "This is broken."},
            ]
        }
    )
    assert answer_text(chat, None) == "The sentiment of this text is negative."


def test_answer_sentiment_json_wins_over_one_word() -> None:
    prompt = user("best ever", system="Sentiment in JSON, one word")
    assert answer_text(prompt, None) == '{"sentiment": "positive"}'


def test_answer_sentiment_one_word_gives_bare_label() -> None:
    assert answer_text(user("so bad", system="SENTIMENT? One Word."), None) == "negative"


def test_answer_default_echoes_first_120_chars_of_last_user_text() -> None:
    long = "x" * 200
    assert answer_text(user(long), None) == "Mock answer: " + "x" * 120
    assert answer_text(Prompt(texts=(), last_user=""), None) == "Mock answer: "


# --- words, truncation and tokens ----------------------------------------------------


@given(st.text())
def test_split_pieces_concatenation_gives_back_the_text(text: str) -> None:
    assert "".join(split_pieces(text)) == text


def test_split_pieces_keeps_spaces_before_words() -> None:
    assert split_pieces("one  two three ") == ("one", "  two", " three ")
    assert split_pieces("") == ()


@pytest.mark.parametrize(
    ("text", "tokens"), [("", 1), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 40, 10)]
)
def test_text_tokens_is_quarter_length_rounded_up_at_least_one(text: str, tokens: int) -> None:
    assert text_tokens(text) == tokens


def test_prompt_tokens_add_three_per_message() -> None:
    assert prompt_tokens(Prompt(texts=("abcdefgh", "", "abc"), last_user="abc")) == 2 + 1 + 1 + 9


def test_compose_without_limit_stops_and_counts_tokens() -> None:
    answer = compose(user("hello"), None, None, cached=0)
    assert answer.text == "Mock answer: hello"
    assert not answer.truncated
    assert answer.prompt_tokens == 2 + 3
    assert answer.completion_tokens == 5
    assert answer.total_tokens == 10


def test_compose_limit_below_word_count_cuts_words_and_marks_truncated() -> None:
    answer = compose(user("x"), "one two three four", 2, cached=0)
    assert answer.text == "one two"
    assert answer.truncated
    assert answer.completion_tokens == text_tokens("one two")


def test_compose_limit_equal_to_word_count_is_not_truncated() -> None:
    answer = compose(user("x"), "one two", 2, cached=0)
    assert answer.text == "one two"
    assert not answer.truncated


def test_compose_cached_tokens_never_exceed_prompt_tokens() -> None:
    assert compose(user("hi"), None, None, cached=1000).cached_tokens == 4
    assert compose(user("hi"), None, None, cached=2).cached_tokens == 2


# --- reading prompts -----------------------------------------------------------------


def test_chat_prompt_reads_text_parts_and_every_role() -> None:
    prompt = chat_prompt(
        {
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image"}]},
                {"role": "assistant", "content": None},
            ]
        }
    )
    assert prompt.texts == ("sys", "a", "")
    assert prompt.last_user == "a"


def test_chat_prompt_with_malformed_messages_is_empty() -> None:
    assert chat_prompt({"messages": "nope"}) == Prompt(texts=(), last_user="")


def test_anthropic_prompt_counts_system_blocks_as_one_message() -> None:
    body = {
        "system": [
            {"type": "text", "text": "be brief"},
            {"type": "text", "text": "mock-reply: ok"},
        ],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    prompt = anthropic_prompt(body)
    assert prompt.texts == ("be brief\nmock-reply: ok", "hi")
    assert answer_text(prompt, None) == "ok"


def test_completion_prompt_list_makes_one_message_per_prompt() -> None:
    prompt = completion_prompt({"prompt": ["first", "second"]})
    assert prompt.texts == ("first", "second")
    assert prompt.last_user == "second"
    assert completion_prompt({"prompt": [1, 2, 3]}).texts == ("1 2 3",)


def test_responses_prompt_reads_instructions_string_and_items() -> None:
    assert responses_prompt({"input": "hey"}).texts == ("hey",)
    body = {
        "instructions": "inst",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "q1"}]},
            {"type": "function_call_output", "call_id": "c", "output": "ignored"},
            {"role": "user", "content": "q2"},
        ],
    }
    prompt = responses_prompt(body)
    assert prompt.texts == ("inst", "q1", "q2")
    assert prompt.last_user == "q2"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", ["a"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2], [[1, 2]]),
        ([[1], [2, 3]], [[1], [2, 3]]),
        ([], []),
        (["a", 3.5], []),
        (None, []),
    ],
)
def test_embedding_inputs_accept_strings_and_token_arrays(value: object, expected: object) -> None:
    assert embedding_inputs({"input": value}) == expected


# --- embeddings ------------------------------------------------------------------------


def test_embedding_vector_is_deterministic_in_range_and_input_dependent() -> None:
    first = encode(float32_bytes("hello", 64), "float")
    assert first == encode(float32_bytes("hello", 64), "float")
    assert first != encode(float32_bytes("hello!", 64), "float")
    assert isinstance(first, list)
    assert len(first) == 64
    assert all(-1.0 <= x <= 1.0 for x in first)


def test_embedding_base64_decodes_to_the_float_vector() -> None:
    raw = float32_bytes([1, 2, 3], 16)
    encoded = encode(raw, "base64")
    assert isinstance(encoded, str)
    assert list(struct.unpack("<16f", base64.b64decode(encoded))) == encode(raw, "float")


# --- steps -----------------------------------------------------------------------------


def test_step_from_headers_without_mock_headers_is_the_default() -> None:
    assert step_from_headers({"authorization": "Bearer x"}) == ScriptStep()


def test_step_from_headers_reads_every_fault_header() -> None:
    step = step_from_headers(
        {
            "x-mock-status": "429",
            "x-mock-error-code": "insufficient_quota",
            "x-mock-retry-after": "2",
            "x-mock-retry-after-ms": "1500",
            "x-mock-should-retry": "false",
            "x-mock-latency-ms": "250",
            "x-mock-ttfb-ms": "10",
            "x-mock-chunk-delay-ms": "5",
            "x-mock-cut-after": "3",
            "x-mock-malformed": "1",
            "x-mock-reply": "hi",
            "x-mock-cached-tokens": "7",
            "x-mock-redirect": "http://elsewhere/",
            "x-mock-echo-headers": "1",
        }
    )
    assert step == ScriptStep(
        status=429,
        headers={"Retry-After": "2", "retry-after-ms": "1500", "x-should-retry": "false"},
        error_code="insufficient_quota",
        latency_s=0.25,
        ttfb_s=0.01,
        chunk_delay_s=0.005,
        cut_after=3,
        malformed=True,
        reply="hi",
        cached_tokens=7,
        redirect="http://elsewhere/",
        echo_headers=True,
    )


def test_step_from_headers_with_bad_number_raises_400() -> None:
    with pytest.raises(MockError) as caught:
        step_from_headers({"x-mock-status": "soon"})
    assert caught.value.status == 400


def test_cached_tokens_of_scripted_step_fall_back_to_header() -> None:
    assert cached_tokens(ScriptStep(), {"x-mock-cached-tokens": "9"}) == 9
    assert cached_tokens(ScriptStep(cached_tokens=2), {"x-mock-cached-tokens": "9"}) == 2
    assert cached_tokens(ScriptStep(), {}) == 0


def test_step_from_json_builds_step_and_names_bad_fields() -> None:
    assert step_from_json({"status": 500, "latency_s": 1}) == ScriptStep(status=500, latency_s=1)
    bad: object
    for bad in ({"stauts": 500}, {"status": "500"}, {"status": True}, {"headers": {"a": 1}}, []):
        with pytest.raises(ValueError, match="step"):
            step_from_json(bad)


def test_step_json_field_types_cover_every_step_field() -> None:
    assert set(STEP_FIELD_TYPES) == {f.name for f in dataclasses.fields(ScriptStep)}


# --- state -----------------------------------------------------------------------------


def test_state_pops_model_script_before_any_model_script() -> None:
    state = MockState()
    state.push([ScriptStep(reply="any")])
    state.push([ScriptStep(reply="m1"), ScriptStep(reply="m2")], model="m")
    assert [state.pop_step("m") for _ in range(4)] == [
        ScriptStep(reply="m1"),
        ScriptStep(reply="m2"),
        ScriptStep(reply="any"),
        None,
    ]


def test_state_reset_clears_requests_and_scripts() -> None:
    state = MockState()
    state.push([ScriptStep()])
    state.record(RecordedRequest("GET", "/", "", {}, b""))
    state.reset()
    assert state.requests == []
    assert state.pop_step("x") is None


def test_state_over_record_limit_drops_oldest_half(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "RECORD_LIMIT", 4)
    state = MockState()
    for n in range(5):
        state.record(RecordedRequest("GET", f"/{n}", "", {}, b""))
    assert [r.path for r in state.requests] == ["/2", "/3", "/4"]


def test_recorded_request_json_parses_body() -> None:
    assert RecordedRequest("POST", "/", "", {}, b'{"a": [1]}').json() == {"a": [1]}

"""The cache key: every field that can change the answer is in it; order and spacing are not."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.cache.keys import (
    DENY_FIELDS,
    answer_headers,
    canonical_json,
    partition,
    request_digest,
)

RICH: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://x.test/a.png", "detail": "low"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ],
    "temperature": 0.0,
    "top_p": 0.9,
    "max_tokens": 100,
    "n": 1,
    "stop": ["\n\n"],
    "seed": 7,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ],
    "tool_choice": "auto",
    "response_format": {"type": "json_object"},
    "logit_bias": {"50256": -100},
    "presence_penalty": 0.5,
    "frequency_penalty": 0.25,
    "reasoning_effort": "low",
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "x_vendor_extension": {"mode": "fast", "flags": [1, 2]},
}
Path = tuple[str | int, ...]


def digest(payload: dict[str, Any], **overrides: Any) -> str:
    args: dict[str, Any] = {
        "payload": payload,
        "provider": "openai",
        "path": "/v1/chat/completions",
        "query": "",
        "headers": {},
        "partition": "key.team-a",
    }
    args.update(overrides)
    return request_digest(**args)


def _paths(node: Any, prefix: Path = ()) -> list[Path]:
    """Every node below the root: leaves, and the lists and objects that hold them."""
    out: list[Path] = []
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        out.append((*prefix, key))
        if isinstance(value, dict | list) and value:
            out += _paths(value, (*prefix, key))
    return out


PATHS = _paths(RICH)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
)


def _get(node: Any, path: Path) -> Any:
    for part in path:
        node = node[part]
    return node


def _set(payload: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(payload)
    _get(changed, path[:-1])[path[-1]] = value
    return changed


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(PATHS), value=VALUES)
def test_changing_any_single_field_changes_the_key(path: Path, value: Any) -> None:
    assume(canonical_json(_get(RICH, path)) != canonical_json(value))
    assert digest(_set(RICH, path, value)) != digest(RICH)


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from([p for p in PATHS if isinstance(p[-1], str)]))
def test_removing_any_field_changes_the_key(path: Path) -> None:
    changed = copy.deepcopy(RICH)
    del _get(changed, path[:-1])[path[-1]]
    assert digest(changed) != digest(RICH)


@settings(max_examples=200, deadline=None)
@given(
    where=st.sampled_from([()] + [p for p in PATHS if isinstance(_get(RICH, p), dict)]),
    name=st.text(min_size=1, max_size=12),
    value=VALUES,
)
def test_adding_an_unknown_field_anywhere_changes_the_key(
    where: Path, name: str, value: Any
) -> None:
    target = _get(RICH, where)
    assume(name not in target and not (where == () and name in DENY_FIELDS))
    changed = copy.deepcopy(RICH)
    _get(changed, where)[name] = value
    assert digest(changed) != digest(RICH)


def _shuffled(node: Any, rng: random.Random) -> Any:
    if isinstance(node, dict):
        items = list(node.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(node, list):
        return [_shuffled(v, rng) for v in node]
    return node


@settings(max_examples=200, deadline=None)
@given(rng=st.randoms(use_true_random=False), indent=st.sampled_from([None, 0, 1, 2, 4, "\t"]))
def test_key_order_and_whitespace_do_not_change_the_key(rng: random.Random, indent: Any) -> None:
    separators = (", ", ": ") if indent is None else (",", ":   ")
    text = json.dumps(_shuffled(RICH, rng), indent=indent, separators=separators)
    assert digest(orjson.loads(text)) == digest(RICH)


def test_integral_float_and_integer_are_the_same_key() -> None:
    assert digest({**RICH, "temperature": 0}) == digest({**RICH, "temperature": 0.0})
    assert digest({**RICH, "max_tokens": 100.0}) == digest(RICH)
    assert digest({**RICH, "temperature": 0.5}) != digest({**RICH, "temperature": 0})


def test_deny_list_is_short_and_names_only_fields_that_cannot_change_the_answer() -> None:
    assert {
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "metadata",
        "prompt_cache_key",
    } == DENY_FIELDS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream", True),
        ("stream_options", {"include_usage": True}),
        ("user", "end-user-42"),
        ("safety_identifier", "u-1"),
        ("metadata", {"user_id": "abc"}),
        ("prompt_cache_key", "tenant-1"),
    ],
)
def test_deny_listed_field_does_not_change_the_key(field: str, value: Any) -> None:
    assert digest({**RICH, field: value}) == digest(RICH)


def test_deny_list_applies_only_at_the_top_level() -> None:
    nested = _set(RICH, ("x_vendor_extension", "stream"), True)
    assert digest(nested) != digest(RICH)


@pytest.mark.parametrize(
    "override",
    [
        {"provider": "azure"},
        {"path": "/v1/completions"},
        {"query": "api-version=2024-10-21"},
        {"headers": {"anthropic-beta": "output-128k"}},
        {"partition": "key.team-b"},
        {"partition": "shared"},
    ],
)
def test_provider_path_query_answer_headers_and_partition_are_in_the_key(
    override: dict[str, Any],
) -> None:
    assert digest(RICH, **override) != digest(RICH)


def test_partition_is_per_key_unless_shared() -> None:
    assert partition("team-a", shared_across_keys=False) == "key.team-a"
    assert partition("team-b", shared_across_keys=False) != partition("team-a", False)
    assert partition("team-a", True) == partition("team-b", True) == "shared"


def test_answer_headers_keep_only_answer_changing_headers_joined_in_order() -> None:
    raw = CIMultiDict(
        [
            ("Authorization", "Bearer gk-1"),
            ("Anthropic-Beta", "a"),
            ("anthropic-beta", "b"),
            ("anthropic-version", "2023-06-01"),
            ("x-request-id", "r1"),
        ]
    )
    assert answer_headers(CIMultiDictProxy(raw)) == {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "a,b",
    }


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _integral_floats_as_ints(value: Any) -> Any:
    """What the key means: a float with an integer value is that integer."""
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_canonical_json_equals_sorted_json_with_integral_floats_as_integers(value: Any) -> None:
    expected = orjson.dumps(_integral_floats_as_ints(value), option=orjson.OPT_SORT_KEYS)
    assert canonical_json(value) == expected

"""Prompt templates: placeholders filled from case vars, other braces left alone."""

from __future__ import annotations

import pytest

from gateway.eval.templates import MissingVariableError, placeholders, render


def test_placeholders_are_filled_from_vars() -> None:
    assert render("Review: {review}\nStars: {stars}", {"review": "ok", "stars": 4}) == (
        "Review: ok\nStars: 4"
    )


def test_non_string_values_are_rendered_as_json() -> None:
    assert render("{items}", {"items": ["a", "é"]}) == '["a", "é"]'


def test_json_braces_in_a_prompt_stay_literal() -> None:
    template = 'Answer like {"sentiment": "positive"} about {text}'
    assert render(template, {"text": "x"}) == 'Answer like {"sentiment": "positive"} about x'


def test_nested_json_example_in_a_prompt_is_sent_as_written() -> None:
    template = 'Answer like {"label": {"name": "positive", "score": 1}} about {text}'
    assert render(template, {"text": "x"}) == (
        'Answer like {"label": {"name": "positive", "score": 1}} about x'
    )


def test_doubled_braces_around_anything_but_a_name_stay_as_written() -> None:
    assert render("{{ }} {{1}} {a}}", {"a": "A"}) == "{{ }} {{1}} A}"


def test_doubled_braces_write_a_literal_placeholder() -> None:
    assert render("{{name}} is {name}", {"name": "Ada"}) == "{name} is Ada"


def test_missing_variable_is_named() -> None:
    with pytest.raises(MissingVariableError) as caught:
        render("Hello {name}", {"nmae": "Ada"})
    assert caught.value.name == "name"


def test_placeholders_lists_each_name_once_in_order() -> None:
    assert placeholders("{b} {a} {b} {{c}}") == ["b", "a"]

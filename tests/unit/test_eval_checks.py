"""Every eval check type, passing and failing, and how checks are validated and described."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from gateway.eval.checks import AutoCheck, Check, CheckOutcome, describe, reads_json, score

_CHECK: TypeAdapter[Check] = TypeAdapter(Check)


def check(**data: Any) -> Check:
    return _CHECK.validate_python(data)


def outcome(data: dict[str, Any], output: str) -> CheckOutcome:
    parsed = check(**data)
    assert parsed.type != "judge"
    auto: AutoCheck = parsed
    return score(auto, output)


@pytest.mark.parametrize(
    ("data", "output"),
    [
        ({"type": "exact", "value": "positive"}, "positive"),
        ({"type": "exact", "value": "positive"}, "  Positive\n"),
        ({"type": "exact", "value": "Positive", "case_sensitive": True}, "Positive"),
        ({"type": "contains", "value": "refund"}, "You can ask for a REFUND within 30 days."),
        ({"type": "regex", "pattern": r"^order #\d{4}$"}, "Order #1234"),
        ({"type": "regex", "pattern": r"\bOK\b", "case_sensitive": True}, "all OK here"),
        ({"type": "valid_json"}, '{"a": [1, 2]}'),
        (
            {"type": "json_schema", "schema": {"type": "object", "required": ["sentiment"]}},
            '{"sentiment": "positive"}',
        ),
        (
            {"type": "json_field", "path": "result.label", "value": "Neutral"},
            '{"result": {"label": "neutral"}}',
        ),
        ({"type": "json_field", "path": "items.1", "value": 7}, '{"items": [3, 7]}'),
        ({"type": "numeric", "value": 42, "tolerance": 0.5}, "The answer is 42.3 metres."),
        ({"type": "numeric", "value": 3.5, "path": "price"}, '{"price": "3.5"}'),
        ({"type": "max_length", "chars": 8}, "  positive  "),
    ],
)
def test_check_passes_on_matching_answer(data: dict[str, Any], output: str) -> None:
    result = outcome(data, output)
    assert result.passed is True, result.detail


@pytest.mark.parametrize(
    ("data", "output", "detail"),
    [
        ({"type": "exact", "value": "positive"}, "The sentiment is positive.", "answer differs"),
        (
            {"type": "exact", "value": "Positive", "case_sensitive": True},
            "positive",
            "answer differs",
        ),
        ({"type": "contains", "value": "refund"}, "No money back.", "text not found"),
        (
            {"type": "contains", "value": "Refund", "case_sensitive": True},
            "refund",
            "text not found",
        ),
        ({"type": "regex", "pattern": r"^\d+$"}, "12 apples", "no match"),
        ({"type": "valid_json"}, "{'a': 1}", "not JSON"),
        (
            {"type": "json_schema", "schema": {"type": "object", "required": ["sentiment"]}},
            '{"label": "positive"}',
            "(root): 'sentiment' is a required property",
        ),
        ({"type": "json_schema", "schema": {"type": "object"}}, "positive", "not JSON"),
        (
            {"type": "json_field", "path": "label", "value": "positive"},
            '{"label": "negative"}',
            'label is "negative"',
        ),
        ({"type": "json_field", "path": "a.b", "value": 1}, '{"a": {}}', "no field a.b"),
        # A superscript two is a digit to str.isdigit, not to int(): no index.
        (
            {"type": "json_field", "path": "a.\u00b2", "value": 1},
            '{"a": [0, 1, 2]}',
            "no field a.\u00b2",
        ),
        ({"type": "json_field", "path": "ok", "value": 1}, '{"ok": true}', "ok is true"),
        ({"type": "numeric", "value": 42, "tolerance": 0.5}, "About 43.", "got 43"),
        ({"type": "numeric", "value": 42}, "forty-two", "no number in the answer"),
        ({"type": "numeric", "value": 1, "path": "n"}, '{"n": "one"}', "n is not a number"),
        ({"type": "max_length", "chars": 5}, "positive", "8 characters"),
    ],
)
def test_check_fails_on_other_answer_with_reason(
    data: dict[str, Any], output: str, detail: str
) -> None:
    result = outcome(data, output)
    assert result.passed is False
    assert result.detail == detail


def test_regex_that_does_not_compile_is_refused_when_loaded() -> None:
    with pytest.raises(ValidationError, match="bad regular expression"):
        check(type="regex", pattern="(unclosed")


def test_json_schema_that_is_not_a_schema_is_refused_when_loaded() -> None:
    with pytest.raises(ValidationError, match="bad JSON Schema"):
        check(type="json_schema", schema={"type": "objekt"})


def test_unknown_check_type_is_refused() -> None:
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        check(type="similar", value="x")


def test_misspelt_check_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        check(type="exact", valeu="x")


def test_checks_reading_json_are_the_json_ones() -> None:
    assert reads_json(check(type="json_field", path="a", value=1))
    assert reads_json(check(type="numeric", value=1, path="a"))
    assert not reads_json(check(type="numeric", value=1))
    assert not reads_json(check(type="exact", value="x"))


def test_descriptions_name_the_check_and_its_value() -> None:
    assert describe(check(type="exact", value="positive")) == 'exact "positive"'
    assert describe(check(type="numeric", value=2, tolerance=0.1, path="n")) == "numeric n 2 ± 0.1"
    assert describe(check(type="judge", rubric="polite")) == "judge"

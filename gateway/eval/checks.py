"""Check definitions for eval cases and how each automatic check scores one output.

Text comparisons (exact, contains, regex, string values of json_field) ignore case unless the
check says `case_sensitive: true`; `exact` also ignores whitespace around the answer.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from jsonschema import exceptions as schema_errors
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field, field_validator

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_PATH = r"^[^.\s]+(\.[^.\s]+)*$"


class _Check(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ExactCheck(_Check):
    type: Literal["exact"]
    value: str
    case_sensitive: bool = False


class ContainsCheck(_Check):
    type: Literal["contains"]
    value: str = Field(min_length=1)
    case_sensitive: bool = False


class RegexCheck(_Check):
    """Python `re.search` anywhere in the answer."""

    type: Literal["regex"]
    pattern: str
    case_sensitive: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad regular expression: {exc}") from None
        return pattern


class ValidJsonCheck(_Check):
    type: Literal["valid_json"]


class JsonSchemaCheck(_Check):
    type: Literal["json_schema"]
    # `schema` would shadow a BaseModel attribute, hence the alias.
    json_schema: dict[str, Any] = Field(alias="schema")

    @field_validator("json_schema")
    @classmethod
    def _is_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            validator_for(schema).check_schema(schema)
        except schema_errors.SchemaError as exc:
            raise ValueError(f"bad JSON Schema: {exc.message}") from None
        return schema


class JsonFieldCheck(_Check):
    """The answer is JSON and the field at a dotted path (`a.b.0`) equals `value`."""

    type: Literal["json_field"]
    path: str = Field(pattern=_PATH)
    value: Any
    case_sensitive: bool = False


class NumericCheck(_Check):
    """A number within `tolerance` of `value`: the JSON field at `path`, or the first number
    in the answer when there is no path."""

    type: Literal["numeric"]
    value: float
    tolerance: float = Field(0.0, ge=0)
    path: str | None = Field(None, pattern=_PATH)


class MaxLengthCheck(_Check):
    type: Literal["max_length"]
    chars: int = Field(gt=0)


class JudgeCheck(_Check):
    """A rubric graded PASS/FAIL by the eval's judge model, through the gateway."""

    type: Literal["judge"]
    rubric: str = Field(min_length=1)


AutoCheck = (
    ExactCheck
    | ContainsCheck
    | RegexCheck
    | ValidJsonCheck
    | JsonSchemaCheck
    | JsonFieldCheck
    | NumericCheck
    | MaxLengthCheck
)
Check = Annotated[AutoCheck | JudgeCheck, Field(discriminator="type")]


class CheckOutcome(BaseModel):
    """How one check scored one answer; `passed` is None when it could not be decided."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    check: str
    passed: bool | None
    detail: str = ""


def reads_json(check: Check) -> bool:
    """Whether the check expects the answer to be JSON."""
    if isinstance(check, NumericCheck):
        return check.path is not None
    return isinstance(check, ValidJsonCheck | JsonSchemaCheck | JsonFieldCheck)


def parse_json(output: str) -> tuple[bool, Any]:
    """(True, value) when the answer is a JSON document, else (False, None)."""
    try:
        return True, json.loads(output)
    except ValueError:
        return False, None


def describe(check: Check) -> str:
    """A short label for reports: `exact "positive"`, `regex /\\d+/`."""
    match check:
        case ExactCheck() | ContainsCheck():
            return f"{check.type} {json.dumps(check.value, ensure_ascii=False)}"
        case RegexCheck():
            return f"regex /{check.pattern}/"
        case JsonFieldCheck():
            return f"json_field {check.path} == {json.dumps(check.value, ensure_ascii=False)}"
        case NumericCheck():
            where = f"{check.path} " if check.path else ""
            return f"numeric {where}{check.value:g} ± {check.tolerance:g}"
        case MaxLengthCheck():
            return f"max_length {check.chars}"
        case _:
            return check.type


def score(check: AutoCheck, output: str) -> CheckOutcome:
    """Score one answer with one automatic check."""
    match check:
        case ExactCheck():
            passed, detail = _exact(check, output)
        case ContainsCheck():
            passed, detail = _contains(check, output)
        case RegexCheck():
            passed, detail = _regex(check, output)
        case ValidJsonCheck():
            passed, detail = _valid_json(output)
        case JsonSchemaCheck():
            passed, detail = _json_schema(check, output)
        case JsonFieldCheck():
            passed, detail = _json_field(check, output)
        case NumericCheck():
            passed, detail = _numeric(check, output)
        case MaxLengthCheck():
            length = len(output.strip())
            passed, detail = length <= check.chars, f"{length} characters"
    return CheckOutcome(check=describe(check), passed=passed, detail=detail)


def _fold(text: str, case_sensitive: bool) -> str:
    return text if case_sensitive else text.casefold()


def _exact(check: ExactCheck, output: str) -> tuple[bool, str]:
    got = _fold(output.strip(), check.case_sensitive)
    passed = got == _fold(check.value.strip(), check.case_sensitive)
    return passed, "" if passed else "answer differs"


def _contains(check: ContainsCheck, output: str) -> tuple[bool, str]:
    passed = _fold(check.value, check.case_sensitive) in _fold(output, check.case_sensitive)
    return passed, "" if passed else "text not found"


def _regex(check: RegexCheck, output: str) -> tuple[bool, str]:
    flags = 0 if check.case_sensitive else re.IGNORECASE
    passed = re.search(check.pattern, output, flags) is not None
    return passed, "" if passed else "no match"


def _valid_json(output: str) -> tuple[bool, str]:
    ok, _ = parse_json(output)
    return ok, "" if ok else "not JSON"


def _json_schema(check: JsonSchemaCheck, output: str) -> tuple[bool, str]:
    ok, document = parse_json(output)
    if not ok:
        return False, "not JSON"
    validator = validator_for(check.json_schema)(check.json_schema)
    error = next(iter(validator.iter_errors(document)), None)
    if error is None:
        return True, ""
    where = "/".join(str(part) for part in error.absolute_path) or "(root)"
    return False, f"{where}: {error.message}"


def _json_field(check: JsonFieldCheck, output: str) -> tuple[bool, str]:
    found, value, detail = _field(output, check.path)
    if not found:
        return False, detail
    if isinstance(value, str) and isinstance(check.value, str):
        passed = _fold(value, check.case_sensitive) == _fold(check.value, check.case_sensitive)
    else:
        # bool is an int in Python; JSON keeps true and 1 apart.
        passed = value == check.value and isinstance(value, bool) == isinstance(check.value, bool)
    return passed, "" if passed else f"{check.path} is {json.dumps(value, ensure_ascii=False)}"


def _numeric(check: NumericCheck, output: str) -> tuple[bool, str]:
    number, detail = _number_in(output, check.path)
    if number is None:
        return False, detail
    passed = math.isfinite(number) and abs(number - check.value) <= check.tolerance
    return passed, "" if passed else f"got {number:g}"


def _number_in(output: str, path: str | None) -> tuple[float | None, str]:
    """The number the check compares, or None and why there is none."""
    if path is None:
        match = _NUMBER.search(output)
        if match is None:
            return None, "no number in the answer"
        return float(match.group(0)), ""
    found, value, detail = _field(output, path)
    if not found:
        return None, detail
    number = _as_number(value)
    return number, "" if number is not None else f"{path} is not a number"


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return None


def _field(output: str, path: str) -> tuple[bool, Any, str]:
    """(found, value, why not) for a dotted path into the answer parsed as JSON."""
    ok, node = parse_json(output)
    if not ok:
        return False, None, "not JSON"
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None, f"no field {path}"
    return True, node, ""

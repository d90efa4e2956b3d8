"""The test-case file: a JSON list of cases, each with an id, template vars and checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.eval.checks import Check
from gateway.eval.errors import EvalInputError, describe_validation


class Case(BaseModel):
    """One test case. With no automatic check (here or eval-wide) it is scored by hand."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    vars: dict[str, Any] = Field(default_factory=dict)
    checks: list[Check] = Field(default_factory=list)
    notes: str | None = None


def read_cases(path: Path) -> tuple[list[Case], list[str]]:
    """The valid cases, and one line per problem with the others (so that the valid ones can
    still be checked further); an unreadable file raises at once."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvalInputError([f"{path}: cannot read: {exc.strerror}"]) from None
    except ValueError as exc:
        raise EvalInputError([f"{path}: not valid JSON: {exc}"]) from None
    if not isinstance(data, list) or not data:
        raise EvalInputError([f"{path}: the top level must be a non-empty list of cases"])
    cases: list[Case] = []
    problems: list[str] = []
    for index, item in enumerate(data):
        try:
            cases.append(Case.model_validate(item))
        except ValidationError as exc:
            problems += describe_validation(exc, f"{path}: {case_label(item, index)}")
    return cases, problems + _duplicate_ids(path, cases)


def case_label(item: Any, index: int) -> str:
    """`case "r07"` when the item has an id, else `case #8` (1-based position)."""
    if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
        return f"case {item['id']!r}"
    return f"case #{index + 1}"


def _duplicate_ids(path: Path, cases: list[Case]) -> list[str]:
    seen: set[str] = set()
    problems = []
    for case in cases:
        if case.id in seen:
            problems.append(f"{path}: case {case.id!r}: id: duplicate id")
        seen.add(case.id)
    return problems

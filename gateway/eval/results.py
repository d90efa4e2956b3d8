"""The results of an eval run as stored in the JSON results file, and reading/writing it.

A person may edit `manual_verdict` in the file ("pass", "fail" or null) and re-summarise; a
manual verdict wins over the automatic one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from gateway.eval.checks import CheckOutcome
from gateway.eval.config import Side
from gateway.eval.errors import EvalInputError, describe_validation

FORMAT: Literal["llm-gateway-eval/1"] = "llm-gateway-eval/1"

Verdict = Literal["pass", "fail", "error", "unscored"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Run(_Frozen):
    """One answer to one case from one prompt (one repetition)."""

    output: str | None = None
    error: str | None = None
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0
    cache: str | None = None
    checks: list[CheckOutcome] = []
    malformed: bool = False


class SideResult(_Frozen):
    runs: list[Run]
    # None when the case has no automatic check and waits for a person.
    auto_verdict: Literal["pass", "fail", "error"] | None = None
    manual_verdict: Literal["pass", "fail"] | None = None

    @field_validator("manual_verdict", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def verdict(self) -> Verdict:
        return self.manual_verdict or self.auto_verdict or "unscored"


class CaseResult(_Frozen):
    id: str
    vars: dict[str, Any]
    A: SideResult
    B: SideResult

    def side(self, side: Side) -> SideResult:
        return self.A if side == "A" else self.B


class PromptInfo(_Frozen):
    label: str
    model: str
    expects_json: bool = False


class EvalResults(_Frozen):
    format: Literal["llm-gateway-eval/1"] = FORMAT
    eval_file: str
    started_at: str
    repetitions: int
    A: PromptInfo
    B: PromptInfo
    judge_cost_micros: int = 0
    judge_tokens: int = 0
    cases: list[CaseResult]
    # Written for readers of the file; recomputed from `cases` whenever results are loaded.
    summary: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None

    def prompt(self, side: Side) -> PromptInfo:
        return self.A if side == "A" else self.B


def save_results(path: Path, results: EvalResults) -> None:
    """Write the results file (parent folders are created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = results.model_dump(mode="json")
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def load_results(path: Path) -> EvalResults:
    """Read a results file, naming the file, the case and the field of any problem."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise EvalInputError([f"{path}: cannot read: {exc.strerror}"]) from None
    except orjson.JSONDecodeError as exc:
        raise EvalInputError([f"{path}: not valid JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise EvalInputError([f"{path}: the top level must be an object"])
    try:
        return EvalResults.model_validate(data)
    except ValidationError as exc:
        raise EvalInputError(_name_cases(describe_validation(exc, str(path)), data)) from None


def _name_cases(problems: list[str], data: dict[str, Any]) -> list[str]:
    """Add the case id to problems located in `cases[i]`."""
    cases = data.get("cases")
    if not isinstance(cases, list):
        return problems
    out = []
    for line in problems:
        for i, case in enumerate(cases):
            prefix = f"cases[{i}]"
            if f": {prefix}." in line and isinstance(case, dict) and "id" in case:
                line = line.replace(f": {prefix}.", f": case {case['id']!r}: {prefix}.", 1)
                break
        out.append(line)
    return out

"""Validate an eval completely before any request is sent, producing the requests to send.

Every template is rendered for every case here, so a missing variable stops the run while
nothing has been spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.eval.cases import Case, read_cases
from gateway.eval.checks import Check, JudgeCheck, reads_json
from gateway.eval.config import SIDES, EvalSpec, JudgeSpec, PromptSpec, Side, load_eval_spec
from gateway.eval.errors import EvalInputError
from gateway.eval.templates import MissingVariableError, render

Messages = tuple[dict[str, str], ...]


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line values that win over the eval file."""

    url: str | None = None
    key: str | None = None
    concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class PromptPlan:
    label: str
    model: str
    params: dict[str, Any]
    # response_format asks for JSON, so a non-JSON answer is malformed.
    expects_json: bool


@dataclass(frozen=True, slots=True)
class CasePlan:
    case: Case
    checks: tuple[Check, ...]
    messages: dict[Side, Messages]

    @property
    def judged(self) -> tuple[JudgeCheck, ...]:
        return tuple(c for c in self.checks if isinstance(c, JudgeCheck))

    @property
    def expects_json(self) -> bool:
        return any(reads_json(c) for c in self.checks)


@dataclass(frozen=True, slots=True)
class Plan:
    eval_file: Path
    url: str
    key: str
    repetitions: int
    concurrency: int
    timeout_s: float
    cache: bool
    prompts: dict[Side, PromptPlan]
    judge: JudgeSpec | None
    cases: tuple[CasePlan, ...]


@dataclass(frozen=True, slots=True)
class _Template:
    text: str
    where: str  # e.g. `prompts.A.user_file (prompts/a.txt)`


def build_plan(path: Path, overrides: Overrides, environ: Mapping[str, str]) -> Plan:
    """Load the eval and its cases, check everything, render every request."""
    spec = load_eval_spec(path)
    templates = {side: _templates(path, spec, side) for side in SIDES}
    cases, problems = read_cases(path.parent / spec.cases)
    problems += _judge_problems(path, spec, cases)
    case_plans = []
    for case in cases:
        messages, missing = _render_case(path.parent / spec.cases, case, templates)
        problems += missing
        case_plans.append(CasePlan(case, (*spec.checks, *case.checks), messages))
    if problems:
        raise EvalInputError(problems)
    return Plan(
        eval_file=path,
        url=(overrides.url or spec.gateway_url).rstrip("/"),
        key=_key(path, spec, overrides, environ),
        repetitions=spec.repetitions,
        concurrency=overrides.concurrency or spec.concurrency,
        timeout_s=spec.timeout_s,
        cache=spec.cache,
        prompts={side: _prompt_plan(spec, side) for side in SIDES},
        judge=spec.judge,
        cases=tuple(case_plans),
    )


def _templates(path: Path, spec: EvalSpec, side: Side) -> dict[str, _Template]:
    prompt = spec.prompt(side)
    out: dict[str, _Template] = {}
    for role in ("system", "user"):
        inline = prompt.system if role == "system" else prompt.user
        file = prompt.system_file if role == "system" else prompt.user_file
        if inline is not None:
            out[role] = _Template(inline, f"prompts.{side}.{role}")
        elif file is not None:
            out[role] = _read_template(path, file, f"prompts.{side}.{role}_file")
    return out


def _read_template(path: Path, file: str, field: str) -> _Template:
    try:
        text = (path.parent / file).read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalInputError([f"{path}: {field}: cannot read {file}: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        problem = f"{file} is not UTF-8 text (byte {exc.start})"
        raise EvalInputError([f"{path}: {field}: {problem}"]) from None
    return _Template(text, f"{field} ({file})")


def _render_case(
    cases_file: Path, case: Case, templates: dict[Side, dict[str, _Template]]
) -> tuple[dict[Side, Messages], list[str]]:
    messages: dict[Side, Messages] = {}
    problems = []
    for side in SIDES:
        rendered = []
        for role, template in templates[side].items():
            try:
                rendered.append({"role": role, "content": render(template.text, case.vars)})
            except MissingVariableError as exc:
                known = ", ".join(sorted(case.vars)) or "none"
                problems.append(
                    f"{cases_file}: case {case.id!r}: {template.where}: missing variable "
                    f"{{{exc.name}}} (the case's vars: {known})"
                )
        messages[side] = tuple(rendered)
    return messages, problems


def _judge_problems(path: Path, spec: EvalSpec, cases: list[Case]) -> list[str]:
    if spec.judge is not None:
        return []
    problems = []
    if any(isinstance(c, JudgeCheck) for c in spec.checks):
        problems.append(f"{path}: checks: a judge check needs a `judge:` section (its model)")
    for case in cases:
        for i, check in enumerate(case.checks):
            if isinstance(check, JudgeCheck):
                problems.append(
                    f"{path.parent / spec.cases}: case {case.id!r}: checks[{i}]: a judge check "
                    f"needs a `judge:` section with a model in {path.name}"
                )
    return problems


def _prompt_plan(spec: EvalSpec, side: Side) -> PromptPlan:
    prompt: PromptSpec = spec.prompt(side)
    params = spec.params.body()
    if prompt.params is not None:
        params.update(prompt.params.body())
    fmt = params.get("response_format") or {}
    model = prompt.model or spec.model
    assert model is not None  # EvalSpec's validator guarantees one of the two
    return PromptPlan(
        label=prompt.label or side,
        model=model,
        params=params,
        expects_json=fmt.get("type") in ("json_object", "json_schema"),
    )


def _key(path: Path, spec: EvalSpec, overrides: Overrides, environ: Mapping[str, str]) -> str:
    if overrides.key:
        return overrides.key
    key = environ.get(spec.api_key_env, "")
    if not key:
        raise EvalInputError(
            [
                f"{path}: api_key_env: environment variable {spec.api_key_env} is not set "
                "(set it, or pass --key)"
            ]
        )
    return key

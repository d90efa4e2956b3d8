"""Turn answers into scored runs and per-case verdicts (pass, fail, error, or left for a person).

A case passes for a prompt when every repetition passes every check. A request error or an
undecided judge makes the verdict "error", which is counted apart from failures.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

from gateway.eval.checks import CheckOutcome, JudgeCheck, parse_json, score
from gateway.eval.client import Reply
from gateway.eval.plan import CasePlan, PromptPlan
from gateway.eval.results import Run, SideResult

AutoVerdict = Literal["pass", "fail", "error"] | None


def score_run(
    reply: Reply, case: CasePlan, prompt: PromptPlan, judged: Sequence[CheckOutcome]
) -> Run:
    """A stored run: the reply plus each check's outcome, in the case's check order.

    `judged` holds the outcomes of the case's judge checks, in order.
    """
    base = Run(
        output=reply.output,
        error=reply.error,
        latency_ms=round(reply.latency_ms, 3),
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        cost_micros=reply.cost_micros,
        cache=reply.cache,
    )
    if reply.output is None:
        return base
    outcomes = list(_outcomes(case, reply.output, iter(judged)))
    malformed = is_malformed(reply.output, prompt.expects_json or case.expects_json)
    return base.model_copy(update={"checks": outcomes, "malformed": malformed})


def _outcomes(
    case: CasePlan, output: str, judged: Iterator[CheckOutcome]
) -> Iterator[CheckOutcome]:
    for check in case.checks:
        yield next(judged) if isinstance(check, JudgeCheck) else score(check, output)


def is_malformed(output: str, expects_json: bool) -> bool:
    """An empty answer, or one that is not JSON where JSON is expected."""
    text = output.strip()
    if not text:
        return True
    return expects_json and not parse_json(text)[0]


def side_result(runs: list[Run], has_checks: bool) -> SideResult:
    return SideResult(runs=runs, auto_verdict=auto_verdict(runs, has_checks))


def auto_verdict(runs: Sequence[Run], has_checks: bool) -> AutoVerdict:
    """The automatic verdict over all repetitions; None when a person must decide."""
    outcomes = [c for run in runs for c in run.checks]
    if any(run.error is not None for run in runs) or any(c.passed is None for c in outcomes):
        return "error"
    if not has_checks:
        return None
    return "pass" if all(c.passed for c in outcomes) else "fail"

"""The numbers that compare prompt A with prompt B, and the exit-code rule built on them.

Pass rates count only cases with a verdict (pass or fail); errors and cases still waiting for
a manual verdict are reported apart. Wins, losses and ties pair the cases where both prompts
have a verdict; a "win" is a case B passes and A fails.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from gateway.eval.config import SIDES, Side
from gateway.eval.results import EvalResults
from gateway.eval.stats import mcnemar_exact, mean, percentile, rate

ALPHA = 0.05
EXIT_OK = 0
EXIT_WORSE = 1
EXIT_BAD_INPUT = 2
# Pass rates are ratios of small integers; this keeps 0.55 - 0.50 "not worse by more than 0.05".
_EPSILON = 1e-9


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SideSummary(_Frozen):
    label: str
    model: str
    cases: int
    passed: int
    failed: int
    errors: int
    unscored: int
    pass_rate: float | None
    answers: int
    malformed: int
    malformed_rate: float | None
    consistency: float | None
    latency_mean_ms: float | None
    latency_p95_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int


class Comparison(_Frozen):
    paired: int
    wins: int
    losses: int
    ties: int
    p_value: float
    significant: bool


class Summary(_Frozen):
    A: SideSummary
    B: SideSummary
    comparison: Comparison
    judge_cost_micros: int
    judge_tokens: int

    def side(self, side: Side) -> SideSummary:
        return self.A if side == "A" else self.B

    @property
    def cost_micros(self) -> int:
        return self.A.cost_micros + self.B.cost_micros + self.judge_cost_micros


class Gate(_Frozen):
    threshold: float
    worse_by: float | None
    passed: bool
    reason: str

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_WORSE


def summarise(results: EvalResults) -> Summary:
    """Every summary number, computed from the per-case results alone."""
    sides = {side: _side_summary(results, side) for side in SIDES}
    return Summary(
        A=sides["A"],
        B=sides["B"],
        comparison=compare(results),
        judge_cost_micros=results.judge_cost_micros,
        judge_tokens=results.judge_tokens,
    )


def _side_summary(results: EvalResults, side: Side) -> SideSummary:
    verdicts = [case.side(side).verdict for case in results.cases]
    runs = [run for case in results.cases for run in case.side(side).runs]
    answered = [run for run in runs if run.output is not None]
    latencies = [run.latency_ms for run in answered]
    passed, failed = verdicts.count("pass"), verdicts.count("fail")
    malformed = sum(run.malformed for run in answered)
    info = results.prompt(side)
    return SideSummary(
        label=info.label,
        model=info.model,
        cases=len(verdicts),
        passed=passed,
        failed=failed,
        errors=verdicts.count("error"),
        unscored=verdicts.count("unscored"),
        pass_rate=rate(passed, passed + failed),
        answers=len(answered),
        malformed=malformed,
        malformed_rate=rate(malformed, len(answered)),
        consistency=_consistency(results, side),
        latency_mean_ms=mean(latencies),
        latency_p95_ms=percentile(latencies, 95),
        prompt_tokens=sum(run.prompt_tokens for run in runs),
        completion_tokens=sum(run.completion_tokens for run in runs),
        cost_micros=sum(run.cost_micros for run in runs),
    )


def _consistency(results: EvalResults, side: Side) -> float | None:
    """Share of cases whose repetitions all gave the same answer (None with one repetition)."""
    if results.repetitions < 2:
        return None
    considered = same = 0
    for case in results.cases:
        outputs = [run.output for run in case.side(side).runs]
        if any(output is None for output in outputs):
            continue
        considered += 1
        same += len({(output or "").strip() for output in outputs}) == 1
    return rate(same, considered)


def compare(results: EvalResults) -> Comparison:
    """Wins, losses and ties of B against A, and the exact McNemar test on the discordant pairs."""
    wins = losses = ties = 0
    for case in results.cases:
        a, b = case.A.verdict, case.B.verdict
        if a not in ("pass", "fail") or b not in ("pass", "fail"):
            continue
        if a == b:
            ties += 1
        elif b == "pass":
            wins += 1
        else:
            losses += 1
    p_value = mcnemar_exact(losses, wins)
    return Comparison(
        paired=wins + losses + ties,
        wins=wins,
        losses=losses,
        ties=ties,
        p_value=p_value,
        significant=p_value < ALPHA,
    )


def gate(summary: Summary, threshold: float) -> Gate:
    """Exit 0 when B's pass rate is at most `threshold` below A's, else 1.

    With no scored case for a prompt nothing shows B is not worse, so the gate fails.
    """
    a, b = summary.A.pass_rate, summary.B.pass_rate
    if a is None or b is None:
        missing = "A" if a is None else "B"
        reason = f"prompt {missing} has no case with a pass/fail verdict"
        return Gate(threshold=threshold, worse_by=None, passed=False, reason=reason)
    worse_by = a - b
    passed = worse_by <= threshold + _EPSILON
    relation = "at most" if passed else "more than"
    reason = (
        f"B's pass rate {b:.1%} is {relation} {threshold:.1%} below A's {a:.1%}"
        if worse_by > 0
        else f"B's pass rate {b:.1%} is not below A's {a:.1%}"
    )
    return Gate(threshold=threshold, worse_by=round(worse_by, 12), passed=passed, reason=reason)

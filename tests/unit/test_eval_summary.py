"""Summary numbers from per-case results, verdict rules, and the exit-code rule."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.eval.checks import CheckOutcome
from gateway.eval.results import CaseResult, EvalResults, PromptInfo, Run, SideResult
from gateway.eval.scoring import auto_verdict, is_malformed
from gateway.eval.summary import EXIT_OK, EXIT_WORSE, gate, summarise

PASS = CheckOutcome(check="exact", passed=True)
FAIL = CheckOutcome(check="exact", passed=False, detail="answer differs")


def run(**fields: Any) -> Run:
    return Run(**{"output": "x", "latency_ms": 10.0, **fields})


def side(
    verdict: str | None, runs: list[Run] | None = None, manual: str | None = None
) -> SideResult:
    return SideResult.model_validate(
        {"runs": runs or [run()], "auto_verdict": verdict, "manual_verdict": manual}
    )


def results(pairs: list[tuple[SideResult, SideResult]], repetitions: int = 1) -> EvalResults:
    return EvalResults(
        eval_file="e.yaml",
        started_at="2025-01-01T00:00:00+00:00",
        repetitions=repetitions,
        A=PromptInfo(label="old", model="m"),
        B=PromptInfo(label="new", model="m"),
        cases=[
            CaseResult(id=f"c{i}", vars={}, A=a, B=b) for i, (a, b) in enumerate(pairs, start=1)
        ],
    )


def verdicts(*pairs: str) -> EvalResults:
    """Pairs like "PF": A passed, B failed; E = error, U = unscored."""
    names = {"P": "pass", "F": "fail", "E": "error", "U": None}
    return results([(side(names[p[0]]), side(names[p[1]])) for p in pairs])


def test_pass_rates_wins_losses_ties_and_p_value() -> None:
    summary = summarise(verdicts(*["FP"] * 6, "PP", "FF", "PF"))
    assert (summary.A.passed, summary.A.failed, summary.B.passed) == (2, 7, 7)
    assert summary.A.pass_rate == pytest.approx(2 / 9)
    assert summary.B.pass_rate == pytest.approx(7 / 9)
    c = summary.comparison
    assert (c.paired, c.wins, c.losses, c.ties) == (9, 6, 1, 2)
    assert c.p_value == pytest.approx(0.125)
    assert not c.significant


def test_six_wins_and_no_losses_is_significant() -> None:
    c = summarise(verdicts(*["FP"] * 6)).comparison
    assert c.p_value == pytest.approx(0.03125)
    assert c.significant


def test_errors_and_unscored_cases_are_counted_apart_and_left_out_of_rates() -> None:
    summary = summarise(verdicts("PP", "EP", "PU", "FF"))
    assert (summary.A.errors, summary.A.unscored) == (1, 0)
    assert (summary.B.errors, summary.B.unscored) == (0, 1)
    assert summary.A.pass_rate == summary.B.pass_rate == pytest.approx(2 / 3)
    assert summary.comparison.paired == 2


def test_manual_verdict_wins_over_the_automatic_one() -> None:
    data = results([(side(None, manual="pass"), side("fail", manual="PASS"))])
    assert [data.cases[0].A.verdict, data.cases[0].B.verdict] == ["pass", "pass"]


def test_latency_tokens_cost_and_malformed_per_prompt() -> None:
    a_runs = [
        run(latency_ms=float(ms), prompt_tokens=10, completion_tokens=2, cost_micros=5)
        for ms in range(1, 21)
    ]
    b_runs = [run(output="", malformed=True), run(output=None, error="HTTP 502: down")]
    data = results(
        [
            (side("pass", a_runs[:10]), side("error", b_runs[:1])),
            (side("pass", a_runs[10:]), side("error", b_runs[1:])),
        ]
    )
    summary = summarise(data)
    assert summary.A.latency_mean_ms == pytest.approx(10.5)
    assert summary.A.latency_p95_ms == 19.0
    assert (summary.A.prompt_tokens, summary.A.completion_tokens, summary.A.cost_micros) == (
        200,
        40,
        100,
    )
    assert (summary.B.answers, summary.B.malformed, summary.B.malformed_rate) == (1, 1, 1.0)
    assert summary.B.errors == 2


def test_consistency_is_the_share_of_cases_with_identical_repetitions() -> None:
    same = [run(output="positive"), run(output=" positive\n")]
    different = [run(output="positive"), run(output="neutral")]
    errored = [run(output="positive"), run(output=None, error="timeout")]
    data = results(
        [
            (side("pass", same), side("pass", same)),
            (side("pass", different), side("pass", errored)),
        ],
        repetitions=2,
    )
    summary = summarise(data)
    assert summary.A.consistency == pytest.approx(0.5)
    assert summary.B.consistency == 1.0


def test_consistency_with_one_repetition_is_not_measured() -> None:
    assert summarise(verdicts("PP")).A.consistency is None


@pytest.mark.parametrize(
    ("pairs", "threshold", "exit_code"),
    [
        (["FP", "FP", "PP"], 0.0, EXIT_OK),  # B better
        (["PP", "FF"], 0.0, EXIT_OK),  # equal
        (["PF", "PP"], 0.0, EXIT_WORSE),  # B worse by 0.5
        (["PF", "PP"], 0.5, EXIT_OK),  # ... which the threshold allows
        (["PF"] + ["PP"] * 19, 0.05, EXIT_OK),  # worse by exactly 0.05
        (["PF", "PF"] + ["PP"] * 18, 0.05, EXIT_WORSE),  # worse by 0.10
    ],
)
def test_exit_code_is_zero_unless_b_is_worse_by_more_than_the_threshold(
    pairs: list[str], threshold: float, exit_code: int
) -> None:
    assert gate(summarise(verdicts(*pairs)), threshold).exit_code == exit_code


def test_gate_fails_when_a_prompt_has_no_verdict_at_all() -> None:
    result = gate(summarise(verdicts("PE", "FE")), 1.0)
    assert result.exit_code == EXIT_WORSE
    assert result.reason == "prompt B has no case with a pass/fail verdict"


def test_gate_reason_says_how_far_b_is_below_a() -> None:
    result = gate(summarise(verdicts("PF", "PP")), 0.05)
    assert result.reason == "B's pass rate 50.0% is more than 5.0% below A's 100.0%"
    assert result.worse_by == 0.5


def test_auto_verdict_needs_every_repetition_to_pass_every_check() -> None:
    assert auto_verdict([run(checks=[PASS]), run(checks=[PASS, PASS])], has_checks=True) == "pass"
    assert auto_verdict([run(checks=[PASS]), run(checks=[FAIL])], has_checks=True) == "fail"
    assert (
        auto_verdict([run(checks=[PASS]), run(output=None, error="x")], has_checks=True) == "error"
    )
    undecided = CheckOutcome(check="judge", passed=None, detail="judge error")
    assert auto_verdict([run(checks=[undecided])], has_checks=True) == "error"
    assert auto_verdict([run()], has_checks=False) is None


def test_empty_or_non_json_answer_is_malformed_only_where_json_is_expected() -> None:
    assert is_malformed("  \n", expects_json=False)
    assert is_malformed("positive", expects_json=True)
    assert not is_malformed('{"sentiment": "positive"}', expects_json=True)
    assert not is_malformed("positive", expects_json=False)

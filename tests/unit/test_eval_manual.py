"""Scoring by hand from an input stream, and re-summarising a saved results file."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from gateway.eval.checks import CheckOutcome
from gateway.eval.cli import add_arguments, run
from gateway.eval.errors import EvalInputError
from gateway.eval.manual import score_manually
from gateway.eval.results import (
    CaseResult,
    EvalResults,
    PromptInfo,
    Run,
    SideResult,
    load_results,
    save_results,
)


def unscored(output: str) -> SideResult:
    return SideResult(runs=[Run(output=output, latency_ms=5.0)])


def auto_pass(output: str) -> SideResult:
    run = Run(output=output, checks=[CheckOutcome(check="contains", passed=True)])
    return SideResult(runs=[run], auto_verdict="pass")


def sample() -> EvalResults:
    return EvalResults(
        eval_file="e.yaml",
        started_at="2025-01-01T00:00:00+00:00",
        repetitions=1,
        A=PromptInfo(label="old", model="m"),
        B=PromptInfo(label="new", model="m"),
        cases=[
            CaseResult(
                id="tone",
                vars={"q": "hi"},
                A=unscored("Hey."),
                B=unscored("Hello! How can I help?"),
            ),
            CaseResult(id="auto", vars={}, A=auto_pass("a"), B=unscored("b")),
            CaseResult(id="last", vars={}, A=unscored("c"), B=unscored("d")),
        ],
    )


def console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=120, color_system=None), buffer


def verdicts(results: EvalResults) -> list[tuple[str, str]]:
    return [(case.A.verdict, case.B.verdict) for case in results.cases]


def test_answers_are_read_for_each_unscored_side_in_order() -> None:
    out, buffer = console()
    scored = score_manually(sample(), out, io.StringIO("n\nyes\ny\nf\npass\n"))
    assert verdicts(scored) == [("fail", "pass"), ("pass", "pass"), ("fail", "pass")]
    shown = buffer.getvalue()
    assert "Hello! How can I help?" in shown
    assert 'vars: {"q": "hi"}' in shown
    assert shown.count("Does B pass?") == 3
    assert shown.count("Does A pass?") == 2  # case "auto" already has A's verdict


def test_unclear_answer_is_asked_again() -> None:
    out, buffer = console()
    scored = score_manually(sample(), out, io.StringIO("maybe\ny\nn\n"))
    assert verdicts(scored)[0] == ("pass", "fail")
    assert "Please answer y, n, s or q." in buffer.getvalue()


def test_skip_leaves_unscored_and_end_of_input_stops_asking() -> None:
    out, _ = console()
    scored = score_manually(sample(), out, io.StringIO("s\ny\n"))
    assert verdicts(scored) == [
        ("unscored", "pass"),
        ("pass", "unscored"),
        ("unscored", "unscored"),
    ]


def test_quit_keeps_the_answers_given_so_far() -> None:
    out, _ = console()
    scored = score_manually(sample(), out, io.StringIO("y\nq\n"))
    assert verdicts(scored)[0] == ("pass", "unscored")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_resummarise_uses_verdicts_filled_in_the_saved_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    save_results(path, sample())
    data = json.loads(path.read_text())
    for case, (a, b) in zip(
        data["cases"], [("fail", "pass"), (None, "pass"), ("pass", "fail")], strict=True
    ):
        case["A"]["manual_verdict"], case["B"]["manual_verdict"] = a, b
    path.write_text(json.dumps(data))
    out, buffer = console()
    code = run(parse("--summarise", str(path), "--json", str(tmp_path / "again.json")), console=out)
    assert code == 0
    summary = json.loads((tmp_path / "again.json").read_text())["summary"]
    assert (summary["A"]["passed"], summary["A"]["failed"], summary["B"]["passed"]) == (2, 1, 2)
    assert summary["comparison"] | {"p_value": None} == {
        "paired": 3,
        "wins": 1,
        "losses": 1,
        "ties": 1,
        "p_value": None,
        "significant": False,
    }
    assert "1 wins, 1 losses, 1 ties" in buffer.getvalue()


def test_resummarise_with_manual_asks_only_what_is_still_open(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    save_results(path, sample())
    out, _ = console()
    answers = io.StringIO("y\nn\ny\ny\ny\n")
    code = run(
        parse("--summarise", str(path), "--manual", "--fail-if-worse-by", "0.2"),
        console=out,
        stdin=answers,
    )
    # A passes 3 of 3, B passes 2 of 3: B is worse by a third, more than 0.2.
    assert code == 1


def test_results_file_with_bad_verdict_names_file_case_and_field(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    save_results(path, sample())
    data = json.loads(path.read_text())
    data["cases"][2]["B"]["manual_verdict"] = "maybe"
    path.write_text(json.dumps(data))
    with pytest.raises(EvalInputError) as caught:
        load_results(path)
    assert (
        f"{path}: case 'last': cases[2].B.manual_verdict: Input should be 'pass' or 'fail'"
        in str(caught.value)
    )


def test_resummarise_of_a_broken_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("{not json")
    out, buffer = console()
    assert run(parse("--summarise", str(path)), console=out) == 2
    assert f"{path}: not valid JSON" in buffer.getvalue()

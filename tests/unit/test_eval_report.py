"""The HTML report (escaped, self-contained, word diffs, failure filter) and the terminal report."""

from __future__ import annotations

import io
import re

from rich.console import Console

from gateway.eval.checks import CheckOutcome
from gateway.eval.html_report import render_html, word_diff
from gateway.eval.results import CaseResult, EvalResults, PromptInfo, Run, SideResult
from gateway.eval.summary import gate, summarise
from gateway.eval.terminal import print_report
from gateway.eval.wording import fold

SCRIPT = '<script>alert("x")</script>'


def side(output: str | None, verdict: str, *, error: str | None = None) -> SideResult:
    passed = verdict == "pass"
    checks = [] if output is None else [CheckOutcome(check='exact "a<b>"', passed=passed)]
    run = Run(output=output, error=error, latency_ms=3.0, checks=checks)
    return SideResult(runs=[run], auto_verdict=verdict)


def sample() -> EvalResults:
    return EvalResults(
        eval_file="evals/<x>.yaml",
        started_at="2025-01-01T00:00:00+00:00",
        repetitions=1,
        A=PromptInfo(label="old <b>", model="gpt-4o-mini"),
        B=PromptInfo(label="new", model="gpt-4o-mini"),
        cases=[
            CaseResult(
                id="inj<1>",
                vars={"review": "</pre><img src=x>"},
                A=side(f"The label is {SCRIPT}", "fail"),
                B=side(SCRIPT, "pass"),
            ),
            CaseResult(id="both", vars={}, A=side("same", "pass"), B=side("same", "pass")),
            CaseResult(
                id="err",
                vars={},
                A=side(None, "error", error="HTTP 502: <down>"),
                B=side("y", "pass"),
            ),
        ],
    )


def html() -> str:
    results = sample()
    summary = summarise(results)
    return render_html(results, summary, gate(summary, 0.0))


def test_html_escapes_model_output_case_ids_vars_and_labels() -> None:
    page = html()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "inj&lt;1&gt;" in page
    assert "&lt;/pre&gt;&lt;img src=x&gt;" in page
    assert "old &lt;b&gt;" in page
    assert "HTTP 502: &lt;down&gt;" in page
    assert page.count("<script>") == 1  # only the report's own filter script


def test_html_loads_nothing_from_elsewhere() -> None:
    page = html()
    assert not re.search(r"https?://|//[a-z0-9]", page, re.IGNORECASE)
    assert not re.search(r"<(link|iframe|img)\b", page)
    # Only inside a tag: escaped model text such as `&lt;img src=x&gt;` holds no `<`.
    assert not re.search(r"<[^>]*\b(src|href)\s*=", page)


def test_html_marks_rows_for_the_failures_only_filter() -> None:
    page = html()
    assert 'id="only-failures"' in page
    assert page.count('<tr class="all-pass same-verdict">') == 1
    assert page.count('<tr class="not-all-pass">') == 2
    assert "body.only-failures tr.all-pass," in page
    assert 'id="only-differences"' in page


def test_word_diff_marks_words_only_in_a_and_only_in_b() -> None:
    a, b = word_diff("The sentiment is positive.", "positive")
    assert a == '<span class="del">The sentiment is </span>positive<span class="del">.</span>'
    assert b == "positive"
    a, b = word_diff("one <two> three", "one four three")
    assert a == 'one <span class="del">&lt;two&gt;</span> three'
    assert b == 'one <span class="ins">four</span> three'


def test_word_diff_with_a_missing_side_only_escapes() -> None:
    assert word_diff(None, "<b>") == ("", "&lt;b&gt;")


def test_terminal_report_shows_output_literally_and_the_gate() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, color_system=None)
    results = sample().model_copy(
        update={
            "cases": [
                CaseResult(id="m", vars={}, A=side("[bold]x[/bold]", "fail"), B=side("y", "pass"))
            ]
        }
    )
    summary = summarise(results)
    print_report(console, results, summary, gate(summary, 0.0))
    text = buffer.getvalue()
    assert "[bold]x[/bold]" in text
    assert "1 wins, 0 losses, 0 ties" in text
    assert "OK: B's pass rate 100.0% is not below A's 0.0%" in text


def test_long_answers_are_folded_with_the_count_left_out() -> None:
    assert fold("x" * 300, limit=240) == "x" * 240 + " … (+60 chars)"
    assert fold("  short  ") == "short"

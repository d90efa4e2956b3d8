"""The self-contained HTML report: summary, side-by-side answers with word diffs, a failure filter.

SECURITY: every piece of text that came from a model, a case or the eval file goes through
html.escape; the page loads nothing from anywhere (inline CSS and JS, no URLs).
"""

from __future__ import annotations

import difflib
import json
import re
from html import escape

from gateway.eval.config import SIDES
from gateway.eval.results import CaseResult, EvalResults, SideResult
from gateway.eval.summary import Gate, Summary
from gateway.eval.wording import comparison_line, gate_line, summary_rows, usd

_WORDS = re.compile(r"\s+|\w+|[^\w\s]")
_OPEN_VARS_CHARS = 400

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d2330;background:#fafbfc}
h1{font-size:20px;margin:0 0 4px}.meta{color:#667}
table{border-collapse:collapse;width:100%;margin:12px 0;background:#fff}
th,td{border:1px solid #d8dde6;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6}.summary td:not(:first-child){text-align:right}
.summary{width:auto}.cases td.out{width:42%}
pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;font:13px/1.4 ui-monospace,monospace}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-weight:600;font-size:12px}
.pass{background:#d5f5dd;color:#11602a}.fail{background:#fbd9d9;color:#8a1414}
.error{background:#fff0c2;color:#7a5300}.unscored{background:#e6e8ee;color:#555}
.del{background:#fbd9d9;text-decoration:line-through}.ins{background:#d5f5dd}
ul.checks{margin:4px 0;padding-left:18px;color:#445;font-size:12px}
.ok{color:#11602a}.bad{color:#8a1414}.gate-ok{color:#11602a;font-weight:600}
.gate-bad{color:#8a1414;font-weight:600}details{color:#445;font-size:12px}
.cases td:first-child{width:16%}pre.vars{font-size:12px;color:#445}
body.only-failures tr.all-pass,body.only-differences tr.same-verdict{display:none}
"""

_FILTERS = (
    '<p><label><input type="checkbox" id="only-failures"> '
    "Show only cases where a prompt did not pass</label> "
    '<label><input type="checkbox" id="only-differences"> '
    "Show only cases where A and B differ in verdict</label></p>"
)

_JS = """
['only-failures', 'only-differences'].forEach(function (id) {
  document.getElementById(id).addEventListener('change', function (e) {
    document.body.classList.toggle(id, e.target.checked);
  });
});
"""


def render_html(results: EvalResults, summary: Summary, gate: Gate) -> str:
    """The whole report as one HTML document."""
    title = escape(f"Eval: {results.eval_file}")
    gate_class = "gate-ok" if gate.passed else "gate-bad"
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{title}</title><style>{_CSS}</style></head><body>",
            f"<h1>{title}</h1>",
            f'<p class="meta">started {escape(results.started_at)}, '
            f"{results.repetitions} repetition(s) per case, {len(results.cases)} cases</p>",
            _summary_table(summary),
            f"<p>{escape(comparison_line(summary))}</p>",
            f"<p>Total cost {escape(usd(summary.cost_micros))} "
            f"(judge {escape(usd(summary.judge_cost_micros))})</p>",
            f'<p class="{gate_class}">{escape(gate_line(gate))}</p>',
            _FILTERS,
            _cases_table(results),
            f"<script>{_JS}</script></body></html>",
        ]
    )


def _summary_table(summary: Summary) -> str:
    head = "".join(f"<th>{escape(side)}: {escape(summary.side(side).label)}</th>" for side in SIDES)
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(a)}</td><td>{escape(b)}</td></tr>"
        for name, a, b in summary_rows(summary)
    )
    return f'<table class="summary"><tr><th></th>{head}</tr>{rows}</table>'


def _cases_table(results: EvalResults) -> str:
    head = "".join(
        f"<th>{escape(side)}: {escape(results.prompt(side).label)} "
        f"({escape(results.prompt(side).model)})</th>"
        for side in SIDES
    )
    rows = "".join(_case_row(case) for case in results.cases)
    return f'<table class="cases"><tr><th>case</th>{head}</tr>{rows}</table>'


def _case_row(case: CaseResult) -> str:
    all_pass = case.A.verdict == "pass" and case.B.verdict == "pass"
    classes = ["all-pass" if all_pass else "not-all-pass"]
    if case.A.verdict == case.B.verdict:
        classes.append("same-verdict")
    diff = word_diff(_first_output(case.A), _first_output(case.B))
    variables = json.dumps(case.vars, ensure_ascii=False, indent=1)
    # Short inputs are shown open: reading the answers needs the question.
    opened = " open" if len(variables) <= _OPEN_VARS_CHARS else ""
    cells = "".join(_side_cell(case.side(side), diff[i]) for i, side in enumerate(SIDES))
    return (
        f'<tr class="{" ".join(classes)}">'
        f"<td><b>{escape(case.id)}</b><details{opened}><summary>vars</summary>"
        f'<pre class="vars">{escape(variables)}</pre></details></td>{cells}</tr>'
    )


def _first_output(result: SideResult) -> str | None:
    return result.runs[0].output if result.runs else None


def _side_cell(result: SideResult, first_html: str) -> str:
    verdict = result.verdict
    parts = [f'<td class="out"><span class="badge {verdict}">{verdict.upper()}</span>']
    if result.manual_verdict is not None:
        parts.append(" <small>(manual)</small>")
    first = result.runs[0] if result.runs else None
    if first is not None and first.output is None:
        parts.append(f"<pre>{escape(first.error or 'error')}</pre>")
    else:
        parts.append(f"<pre>{first_html}</pre>")
    parts.append(_checks_list(result))
    parts.append(_other_runs(result))
    parts.append("</td>")
    return "".join(parts)


def _checks_list(result: SideResult) -> str:
    items = []
    for number, run in enumerate(result.runs, start=1):
        prefix = f"run {number}: " if len(result.runs) > 1 else ""
        for outcome in run.checks:
            mark = {True: ("ok", "✓"), False: ("bad", "✗"), None: ("bad", "?")}[outcome.passed]
            detail = f" — {outcome.detail}" if outcome.detail else ""
            items.append(
                f'<li class="{mark[0]}">{mark[1]} {escape(prefix + outcome.check + detail)}</li>'
            )
    return f'<ul class="checks">{"".join(items)}</ul>' if items else ""


def _other_runs(result: SideResult) -> str:
    others = [
        run.output if run.output is not None else f"[error] {run.error}" for run in result.runs[1:]
    ]
    if not others:
        return ""
    body = "".join(f"<pre>{escape(text)}</pre>" for text in others)
    return f"<details><summary>{len(others)} more run(s)</summary>{body}</details>"


def word_diff(a: str | None, b: str | None) -> tuple[str, str]:
    """Both answers as escaped HTML, words only in A marked `del`, words only in B `ins`."""
    if a is None or b is None:
        return escape(a or ""), escape(b or "")
    a_words, b_words = _WORDS.findall(a), _WORDS.findall(b)
    a_html: list[str] = []
    b_html: list[str] = []
    matcher = difflib.SequenceMatcher(None, a_words, b_words, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        a_part = escape("".join(a_words[i1:i2]))
        b_part = escape("".join(b_words[j1:j2]))
        if tag == "equal":
            a_html.append(a_part)
            b_html.append(b_part)
            continue
        if a_part:
            a_html.append(f'<span class="del">{a_part}</span>')
        if b_part:
            b_html.append(f'<span class="ins">{b_part}</span>')
    return "".join(a_html), "".join(b_html)

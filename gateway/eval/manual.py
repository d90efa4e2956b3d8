"""Scoring by hand in the terminal: show both answers, ask pass or fail for each unscored side."""

from __future__ import annotations

import json
from typing import Literal, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gateway.eval.config import SIDES, Side
from gateway.eval.results import CaseResult, EvalResults, SideResult

Answer = Literal["pass", "fail", "skip", "quit"]

_ANSWERS: dict[str, Answer] = {
    "y": "pass",
    "yes": "pass",
    "p": "pass",
    "pass": "pass",
    "n": "fail",
    "no": "fail",
    "f": "fail",
    "fail": "fail",
    "": "skip",
    "s": "skip",
    "skip": "skip",
    "q": "quit",
    "quit": "quit",
}


def score_manually(results: EvalResults, console: Console, stream: TextIO) -> EvalResults:
    """Ask for a verdict on every side still unscored; answers are read line by line from
    `stream`. Skipped sides stay unscored; "q" or the end of input stops asking."""
    cases = list(results.cases)
    pending = [i for i, case in enumerate(cases) if _unscored(case)]
    for position, index in enumerate(pending, start=1):
        case = cases[index]
        console.rule(Text(f"case {case.id} ({position}/{len(pending)})"))
        console.print(_answers_table(case, results))
        updates: dict[str, SideResult] = {}
        for side in _unscored(case):
            answer = ask(console, stream, f"Does {side} pass? [y]es/[n]o/[s]kip/[q]uit: ")
            if answer == "quit":
                cases[index] = case.model_copy(update=updates)
                return results.model_copy(update={"cases": cases})
            if answer != "skip":
                updates[side] = case.side(side).model_copy(update={"manual_verdict": answer})
        cases[index] = case.model_copy(update=updates)
    return results.model_copy(update={"cases": cases})


def _unscored(case: CaseResult) -> list[Side]:
    return [side for side in SIDES if case.side(side).verdict == "unscored"]


def ask(console: Console, stream: TextIO, question: str) -> Answer:
    """Ask until the answer is understood; the end of input counts as quit."""
    while True:
        console.print(question, end="", markup=False, highlight=False)
        line = stream.readline()
        if not line:
            console.print()
            return "quit"
        if not stream.isatty():
            console.print(line.strip(), markup=False, highlight=False)  # echo what was read
        answer = _ANSWERS.get(line.strip().lower())
        if answer is not None:
            return answer
        console.print("Please answer y, n, s or q.", style="yellow", markup=False)


def _answers_table(case: CaseResult, results: EvalResults) -> Table:
    table = Table(show_lines=True, expand=True, caption=_vars_line(case))
    for side in SIDES:
        info = results.prompt(side)
        header = Text(f"{side}: {info.label} ({info.model})")
        table.add_column(header, overflow="fold", ratio=1)
    table.add_row(*(_all_answers(case.side(side)) for side in SIDES))
    return table


def _vars_line(case: CaseResult) -> Text:
    return Text("vars: " + json.dumps(case.vars, ensure_ascii=False))


def _all_answers(result: SideResult) -> Text:
    """Each distinct answer once, with how many repetitions gave it."""
    counts: dict[str, int] = {}
    for run in result.runs:
        text = run.output if run.output is not None else f"[error] {run.error}"
        counts[text] = counts.get(text, 0) + 1
    if len(counts) == 1:
        return Text(next(iter(counts)))
    return Text("\n\n".join(f"({n} runs) {text}" for text, n in counts.items()))

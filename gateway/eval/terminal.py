"""What an eval shows in the terminal: the progress bar, the side-by-side table, the summary."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from gateway.eval.client import Reply
from gateway.eval.config import SIDES, Side
from gateway.eval.results import CaseResult, EvalResults, Run, SideResult, Verdict
from gateway.eval.summary import Gate, Summary
from gateway.eval.wording import comparison_line, fold, gate_line, summary_rows, usd

_STYLES: dict[Verdict, str] = {
    "pass": "bold green",
    "fail": "bold red",
    "error": "bold yellow",
    "unscored": "dim",
}


class RunProgress:
    """A rich progress bar over the eval's requests, showing the running cost."""

    def __init__(self, console: Console) -> None:
        self._cost_micros = 0
        self._errors = 0
        self._bar = Progress(
            TextColumn("[bold]eval[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[cost]}  errors: {task.fields[errors]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task("eval", total=0, cost=usd(0), errors=0)

    def __enter__(self) -> RunProgress:
        self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.stop()

    def planned(self, requests: int) -> None:
        total = self._bar.tasks[0].total or 0
        self._bar.update(self._task, total=total + requests)

    def done(self, reply: Reply) -> None:
        self._cost_micros += reply.cost_micros
        self._errors += reply.error is not None
        self._bar.update(self._task, advance=1, cost=usd(self._cost_micros), errors=self._errors)


def case_table(results: EvalResults) -> Table:
    """One row per case: its id, each prompt's (first) answer and verdict."""
    table = Table(title="A vs B", show_lines=True, expand=True)
    table.add_column("case", no_wrap=True)
    for side in SIDES:
        info = results.prompt(side)
        header = Text(f"{side}: {info.label} ({info.model})")
        table.add_column(header, overflow="fold", ratio=1)
        table.add_column(side, no_wrap=True)
    for case in results.cases:
        table.add_row(Text(case.id), *_side_cells(case, "A"), *_side_cells(case, "B"))
    return table


def _side_cells(case: CaseResult, side: Side) -> tuple[Text, Text]:
    result = case.side(side)
    return _answer_text(result), verdict_text(result.verdict)


def _answer_text(result: SideResult) -> Text:
    first = result.runs[0] if result.runs else None
    if first is None:
        return Text("")
    if first.output is None:
        return Text(first.error or "error", style="yellow")
    text = Text(fold(first.output) or "(empty answer)")
    distinct = len({(run.output or "").strip() for run in result.runs})
    if len(result.runs) > 1:
        text.append(f"\n[{len(result.runs)} runs, {distinct} distinct]", style="dim")
    failed = [c for run in result.runs for c in run.checks if c.passed is not True]
    if failed:
        text.append(f"\n✗ {failed[0].check}: {failed[0].detail}", style="dim")
    return text


def _runs(results: EvalResults) -> list[Run]:
    return [run for case in results.cases for side in SIDES for run in case.side(side).runs]


def verdict_text(verdict: Verdict) -> Text:
    return Text(verdict.upper() if verdict != "unscored" else "?", style=_STYLES[verdict])


def summary_table(summary: Summary) -> Table:
    """One row per measure, one column per prompt."""
    table = Table(title="Summary")
    table.add_column("")
    for side in SIDES:
        table.add_column(Text(f"{side}: {summary.side(side).label}"), justify="right")
    for name, a, b in summary_rows(summary):
        table.add_row(name, Text(a), Text(b))
    return table


def print_report(console: Console, results: EvalResults, summary: Summary, gate: Gate) -> None:
    """The whole terminal report, ending with the gate's verdict."""
    console.print(case_table(results))
    console.print(summary_table(summary))
    console.print(comparison_line(summary))
    if summary.judge_cost_micros or summary.judge_tokens:
        console.print(f"Judge: {summary.judge_tokens} tokens, {usd(summary.judge_cost_micros)}")
    console.print(f"Total cost: {usd(summary.cost_micros)}")
    failed = [run.error for run in _runs(results) if run.error is not None]
    if failed:
        console.print(
            Text(f"{len(failed)} requests failed; the first: {failed[0]}", style="yellow")
        )
    pending = summary.A.unscored + summary.B.unscored
    if pending:
        console.print(
            f"[dim]{pending} verdicts await a person: run with --manual, or set manual_verdict "
            "in the --json file and run --summarise on it.[/]"
        )
    style = "bold green" if gate.passed else "bold red"
    console.print(Text(gate_line(gate), style=style))

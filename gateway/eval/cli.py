"""`gateway eval`: parse the arguments and delegate; the exit code can gate a pull request.

Exit 0 when B is not worse than A beyond the threshold, 1 when it is, 2 for bad input (found
before anything is sent).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.text import Text

from gateway.cli import positive_int
from gateway.eval.errors import EvalInputError
from gateway.eval.html_report import render_html
from gateway.eval.manual import score_manually
from gateway.eval.plan import Overrides, build_plan
from gateway.eval.results import EvalResults, load_results, save_results
from gateway.eval.runner import execute
from gateway.eval.summary import EXIT_BAD_INPUT, gate, summarise
from gateway.eval.terminal import RunProgress, print_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gateway eval`."""
    parser.add_argument(
        "eval_file", nargs="?", type=Path, help="eval file (YAML); not needed with --summarise"
    )
    parser.add_argument("--html", type=Path, metavar="PATH", help="write the HTML report here")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results file here")
    parser.add_argument(
        "--fail-if-worse-by",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="exit 1 when B's pass rate is more than RATE below A's (0.05 = 5 points; default 0)",
    )
    parser.add_argument(
        "--manual", action="store_true", help="ask pass/fail for cases with no automatic check"
    )
    parser.add_argument(
        "--summarise", type=Path, metavar="PATH", help="re-summarise a saved results file"
    )
    parser.add_argument("--url", type=_url, help="gateway base URL (overrides gateway_url)")
    parser.add_argument("--key", help="gateway key (overrides the api_key_env variable)")
    parser.add_argument("--concurrency", type=positive_int, help="requests in flight at once")


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # nan too
        raise argparse.ArgumentTypeError(f"a number from 0 to 1, not {text!r}")
    return value


def _url(text: str) -> str:
    """As `gateway_url` in the eval file must be: refused before anything is sent."""
    if not _URL.match(text):
        raise argparse.ArgumentTypeError(f"an http:// or https:// URL, not {text!r}")
    return text


_URL = re.compile(r"^https?://[^\s/]+")


def run(
    args: argparse.Namespace,
    *,
    console: Console | None = None,
    stdin: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run `gateway eval` with parsed arguments; returns the exit code."""
    return asyncio.run(run_async(args, console=console, stdin=stdin, environ=environ))


async def run_async(
    args: argparse.Namespace,
    *,
    console: Console | None = None,
    stdin: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """`run` for callers already inside an event loop."""
    out = console or Console()
    err = console or Console(stderr=True)
    try:
        results = await _results(args, err, os.environ if environ is None else environ)
    except EvalInputError as exc:
        for problem in exc.problems:
            err.print(Text(f"error: {problem}", style="red"))
        err.print("Nothing was sent.", markup=False)
        return EXIT_BAD_INPUT
    if args.manual:
        results = score_manually(results, out, stdin or sys.stdin)
    return _report(args, results, out, err)


async def _results(
    args: argparse.Namespace, err: Console, environ: Mapping[str, str]
) -> EvalResults:
    _check_outputs(args)
    if args.summarise is not None:
        if args.eval_file is not None:
            raise EvalInputError(["give either an eval file or --summarise PATH, not both"])
        return load_results(args.summarise)
    if args.eval_file is None:
        raise EvalInputError(["no eval file given (or use --summarise PATH)"])
    overrides = Overrides(url=args.url, key=args.key, concurrency=args.concurrency)
    plan = build_plan(args.eval_file, overrides, environ)
    with RunProgress(err) as progress:
        return await execute(plan, progress)


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse report paths that cannot be written before a run spends anything."""
    for flag, path in (("--json", args.json), ("--html", args.html)):
        if path is None:
            continue
        if path.is_dir():
            raise EvalInputError([f"{flag} {path}: is a directory"])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = f"{flag} {path}: cannot create {exc.filename}: {exc.strerror}"
            raise EvalInputError([problem]) from None


def _report(args: argparse.Namespace, results: EvalResults, out: Console, err: Console) -> int:
    summary = summarise(results)
    verdict = gate(summary, args.fail_if_worse_by)
    results = results.model_copy(
        update={"summary": summary.model_dump(mode="json"), "gate": verdict.model_dump(mode="json")}
    )
    print_report(out, results, summary, verdict)
    try:
        if args.json is not None:
            save_results(args.json, results)
            out.print(Text(f"Results file: {args.json}"))
        if args.html is not None:
            args.html.write_text(render_html(results, summary, verdict), encoding="utf-8")
            out.print(Text(f"HTML report: {args.html}"))
    except OSError as exc:
        err.print(Text(f"error: cannot write {exc.filename}: {exc.strerror}", style="red"))
        return EXIT_BAD_INPUT
    return verdict.exit_code

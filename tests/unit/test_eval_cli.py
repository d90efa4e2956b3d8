"""`gateway eval` through its CLI seam: exit codes, written reports, nothing sent on bad input."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from rich.console import Console

from gateway.eval.cli import add_arguments, run_async


@dataclass
class Scripted:
    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def gw(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Scripted:
    """Answers "good" to requests with a system message, "bad" to the others."""
    state = Scripted()

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        state.seen.append(body)
        content = "good" if body["messages"][0]["role"] == "system" else "bad"
        return web.json_response(
            {"choices": [{"message": {"role": "assistant", "content": content}}], "usage": {}},
            headers={"x-gateway-cost-usd": "0.000010"},
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    server = await aiohttp_server(app)
    state.url = str(server.make_url("")).rstrip("/")
    return state


def write_eval(tmp_path: Path, b_has_system: bool = True, bad_case: bool = False) -> Path:
    cases: list[dict[str, Any]] = [
        {"id": f"c{i}", "vars": {"q": str(i)}, "checks": [{"type": "exact", "value": "good"}]}
        for i in range(4)
    ]
    if bad_case:
        cases.append({"id": "broken", "vars": {}, "checks": [{"type": "exact", "value": "good"}]})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    with_system = {"system": "Be good.", "user": "{q}"}
    without = {"user": "{q}"}
    prompts = {"A": without, "B": with_system} if b_has_system else {"A": with_system, "B": without}
    spec = {"model": "gpt-4o-mini", "prompts": prompts, "cases": "cases.json"}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway eval")
    add_arguments(parser)
    return parser.parse_args(argv)


async def main(*argv: str) -> tuple[int, str]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=140, color_system=None)
    code = await run_async(parse(*argv), console=console, environ={"GATEWAY_API_KEY": "gk"})
    return code, buffer.getvalue()


async def test_b_better_exits_0_and_writes_json_and_html(gw: Scripted, tmp_path: Path) -> None:
    out_json, out_html = tmp_path / "out" / "r.json", tmp_path / "out" / "r.html"
    code, text = await main(
        str(write_eval(tmp_path)), "--url", gw.url, "--json", str(out_json), "--html", str(out_html)
    )
    assert code == 0
    summary = json.loads(out_json.read_text())["summary"]
    assert (summary["A"]["pass_rate"], summary["B"]["pass_rate"]) == (0.0, 1.0)
    assert summary["A"]["cost_micros"] == 40
    assert out_html.read_text().startswith("<!doctype html>")
    assert "4 wins, 0 losses, 0 ties" in text


async def test_b_worse_beyond_threshold_exits_1(gw: Scripted, tmp_path: Path) -> None:
    path = str(write_eval(tmp_path, b_has_system=False))
    code, text = await main(path, "--url", gw.url, "--fail-if-worse-by", "0.05")
    assert code == 1
    assert "WORSE: B's pass rate 0.0% is more than 5.0% below A's 100.0%" in text


async def test_bad_input_exits_2_before_any_request(gw: Scripted, tmp_path: Path) -> None:
    code, text = await main(str(write_eval(tmp_path, bad_case=True)), "--url", gw.url)
    assert code == 2
    assert "case 'broken': prompts.A.user: missing variable {q}" in text
    assert "Nothing was sent." in text
    assert gw.seen == []


async def test_report_path_that_is_a_directory_exits_2_before_any_request(
    gw: Scripted, tmp_path: Path
) -> None:
    code, text = await main(str(write_eval(tmp_path)), "--url", gw.url, "--json", str(tmp_path))
    assert code == 2
    assert f"--json {tmp_path}: is a directory" in text
    assert gw.seen == []


async def test_missing_eval_file_exits_2(tmp_path: Path) -> None:
    code, text = await main(str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml: cannot read" in text


async def test_eval_file_and_summarise_together_exit_2(tmp_path: Path) -> None:
    code, text = await main("e.yaml", "--summarise", "r.json")
    assert code == 2
    assert "not both" in text


async def test_no_eval_file_and_no_summarise_exits_2() -> None:
    code, text = await main()
    assert code == 2
    assert "no eval file given" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["--fail-if-worse-by", "1.5"],
        ["--concurrency", "0"],
        ["--url", "localhost:8080"],  # no scheme: every request would fail, one by one
    ],
)
def test_out_of_range_option_is_refused_by_the_parser(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse("e.yaml", *argv)
    assert caught.value.code == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "many"], "argument --concurrency: a whole number of 1 or more, not"),
        (["--fail-if-worse-by", "5%"], "argument --fail-if-worse-by: a number from 0 to 1, not"),
        (["--fail-if-worse-by", "nan"], "argument --fail-if-worse-by: a number from 0 to 1, not"),
    ],
)
def test_a_number_option_that_is_no_number_says_what_it_wants(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse("e.yaml", *argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err

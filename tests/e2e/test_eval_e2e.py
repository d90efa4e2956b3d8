"""The shipped sentiment eval, run through a real gateway in front of the mock provider."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp.test_utils import TestServer
from rich.console import Console

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.eval.cli import add_arguments, run
from tests.conftest import KEY_A, Stack, sha

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "evals" / "sentiment.yaml"
# Reviews whose words mislead the mock's word-counting classifier (negation, sarcasm, ...).
MOCK_MISLABELS = {"r07", "r11", "r14", "r18"}


async def gateway_eval(stack: Stack, eval_file: Path, tmp_path: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser(prog="gateway eval")
    add_arguments(parser)
    args = parser.parse_args(
        [
            str(eval_file),
            *("--url", stack.url, "--key", stack.key),
            *("--json", str(tmp_path / "results.json"), "--html", str(tmp_path / "report.html")),
            *extra,
        ]
    )
    console = Console(file=io.StringIO(), width=160, color_system=None)
    # `run` owns its event loop, as under the real CLI; the gateway keeps serving on this one.
    return await asyncio.to_thread(run, args, console=console, environ={})


def saved(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "results.json").read_text())
    return data


async def test_shipped_eval_b_beats_a_and_exits_0(gateway_stack: Stack, tmp_path: Path) -> None:
    assert await gateway_eval(gateway_stack, EXAMPLE, tmp_path) == 0
    data = saved(tmp_path)
    summary = data["summary"]
    a, b, comparison = summary["A"], summary["B"], summary["comparison"]
    assert (a["passed"], a["failed"], a["errors"], a["pass_rate"]) == (0, 20, 0, 0.0)
    assert (b["passed"], b["failed"], b["errors"], b["pass_rate"]) == (16, 4, 0, 0.8)
    assert (comparison["wins"], comparison["losses"], comparison["ties"]) == (16, 0, 4)
    assert comparison["p_value"] == 2 / 2**16
    assert comparison["significant"] is True
    assert a["prompt_tokens"] > 0
    assert b["completion_tokens"] > 0
    assert a["malformed"] == b["malformed"] == 0
    assert data["gate"]["passed"] is True

    cases = {case["id"]: case for case in data["cases"]}
    assert cases["r01"]["A"]["runs"][0]["output"] == "The sentiment of this text is positive."
    assert cases["r01"]["B"]["runs"][0]["output"] == "positive"
    assert {cid for cid, case in cases.items() if case["B"]["auto_verdict"] == "fail"} == (
        MOCK_MISLABELS
    )

    page = (tmp_path / "report.html").read_text()
    assert page.count('<tr class="not-all-pass">') == 16  # B passes, A fails
    assert page.count('<tr class="not-all-pass same-verdict">') == 4  # both fail
    assert '<span class="badge pass">PASS</span>' in page
    assert not re.search(r"https?://", page)


async def test_swapped_prompts_b_worse_exits_1(gateway_stack: Stack, tmp_path: Path) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["prompts"] = {"A": spec["prompts"]["B"], "B": spec["prompts"]["A"]}
    spec["cases"] = str(EXAMPLE.parent / spec["cases"])
    swapped = tmp_path / "swapped.yaml"
    swapped.write_text(yaml.safe_dump(spec))

    code = await gateway_eval(gateway_stack, swapped, tmp_path, "--fail-if-worse-by", "0.05")

    assert code == 1
    summary = saved(tmp_path)["summary"]
    assert (summary["A"]["pass_rate"], summary["B"]["pass_rate"]) == (0.8, 0.0)
    comparison = summary["comparison"]
    assert (comparison["wins"], comparison["losses"], comparison["ties"]) == (0, 16, 4)
    assert saved(tmp_path)["gate"]["reason"] == (
        "B's pass rate 0.0% is more than 5.0% below A's 80.0%"
    )


async def test_more_requests_than_the_key_rate_limit_are_all_answered_after_waiting(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    make_config: Callable[..., GatewayConfig],
    gateway_stack: Stack,
    tmp_path: Path,
) -> None:
    keys = [
        {"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"], "rate_limit": {"rpm": 600}}
    ]
    server = await aiohttp_server(create_app(make_config(keys=keys)))
    limited = dataclasses.replace(gateway_stack, url=str(server.make_url("")).rstrip("/"))
    check = {"type": "max_length", "chars": 100}
    cases = [
        {"id": f"c{i}", "vars": {"review": f"review {i}"}, "checks": [check]} for i in range(320)
    ]
    (tmp_path / "cases.json").write_text(json.dumps(cases))  # 640 requests: 40 over the limit
    spec = {**yaml.safe_load(EXAMPLE.read_text()), "cases": "cases.json", "concurrency": 16}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(spec))

    assert await gateway_eval(limited, tmp_path / "eval.yaml", tmp_path) == 0

    summary = saved(tmp_path)["summary"]
    assert [(summary[s]["passed"], summary[s]["errors"]) for s in "AB"] == [(320, 0)] * 2
    assert len(gateway_stack.mock.requests) == 640
    async with aiohttp.ClientSession() as session, session.get(f"{limited.url}/metrics") as resp:
        metrics = await resp.text()
    refused = re.search(
        r'llm_gateway_rejections_total\{[^}]*reason="rate_limit"[^}]*\} (\S+)', metrics
    )
    assert refused is not None
    assert float(refused.group(1)) > 0  # so these cases were answered after waiting

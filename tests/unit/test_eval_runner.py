"""Running an eval against a scripted stand-in for the gateway: requests, errors, cost, judge."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.eval.client import Reply, cost_micros
from gateway.eval.judge import JUDGE_SYSTEM, parse_verdict
from gateway.eval.plan import Overrides, build_plan
from gateway.eval.results import EvalResults
from gateway.eval.runner import execute
from gateway.eval.summary import summarise

KEY = "gk-eval-test"


@dataclass
class Gateway:
    """Answers `echo: <last user text>`, unless the text asks for a scripted failure."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cost: str | None = "0.0015"


async def _answer(gw: Gateway, request: web.Request) -> web.StreamResponse:
    body = await request.json()
    gw.bodies.append(body)
    gw.headers.append(dict(request.headers))
    text = body["messages"][-1]["content"]
    if body["messages"][0]["content"] == JUDGE_SYSTEM:
        return _chat(gw, "PASS: polite enough" if "please" in text else "I think it is fine")
    if "quota" in text:
        headers = {"x-should-retry": "false"}
        return web.json_response(
            {"error": {"message": "budget spent"}}, status=429, headers=headers
        )
    if "busy" in text and sum("busy" in b["messages"][-1]["content"] for b in gw.bodies) <= 2:
        headers = {"x-should-retry": "true", "retry-after-ms": "20", "Retry-After": "1"}
        return web.json_response({"error": {"message": "slow down"}}, status=429, headers=headers)
    if "status500" in text:
        return web.json_response({"error": {"message": "upstream exploded"}}, status=500)
    if "garbage" in text:
        return web.Response(text="<html>oops</html>", content_type="text/html")
    if "slow" in text:
        await asyncio.sleep(5)
    if "drop" in text:
        assert request.transport is not None
        request.transport.close()
    await asyncio.sleep(0.02)
    return _chat(gw, f"echo: {text}")


def _chat(gw: Gateway, content: str) -> web.Response:
    headers = {"x-gateway-cost-usd": gw.cost} if gw.cost is not None else {}
    body = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    return web.json_response(body, headers=headers)


@pytest.fixture
async def gw(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Gateway:
    state = Gateway()

    async def handle(request: web.Request) -> web.StreamResponse:
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            return await _answer(state, request)
        finally:
            state.in_flight -= 1

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    server = await aiohttp_server(app)
    state.url = str(server.make_url("")).rstrip("/")
    return state


class Tally:
    def __init__(self) -> None:
        self.planned_total = 0
        self.replies: list[Reply] = []

    def planned(self, requests: int) -> None:
        self.planned_total += requests

    def done(self, reply: Reply) -> None:
        self.replies.append(reply)


def write_eval(tmp_path: Path, texts: list[str], **spec: Any) -> Path:
    cases = [
        {"id": text, "vars": {"text": text}, "checks": [{"type": "contains", "value": "echo"}]}
        for text in texts
    ]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    data = {
        "model": "gpt-4o-mini",
        "prompts": {"A": {"user": "{text}"}, "B": {"system": "Be brief.", "user": "{text}"}},
        "cases": "cases.json",
        "timeout_s": 0.5,
        **spec,
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def run_eval(path: Path, gw: Gateway, tally: Tally | None = None) -> EvalResults:
    plan = build_plan(path, Overrides(url=gw.url, key=KEY), {})
    return await execute(plan, tally or Tally())


async def test_failures_of_single_cases_are_errors_and_the_run_continues(
    gw: Gateway, tmp_path: Path
) -> None:
    texts = ["ok-1", "status500", "garbage", "slow", "drop", "ok-2"]
    results = await run_eval(write_eval(tmp_path, texts), gw)
    errors = {case.id: case.A.runs[0].error for case in results.cases}
    assert errors["ok-1"] is None
    assert errors["ok-2"] is None
    assert errors["status500"] == "HTTP 500: upstream exploded"
    assert (errors["garbage"] or "").startswith("bad response: JSONDecodeError")
    assert errors["slow"] == "timeout after 0.5s"
    assert (errors["drop"] or "").startswith("connection error")
    summary = summarise(results)
    for side in (summary.A, summary.B):
        assert (side.passed, side.failed, side.errors, side.pass_rate) == (2, 0, 4, 1.0)


async def test_request_the_gateway_says_to_retry_is_sent_again_after_its_wait(
    gw: Gateway, tmp_path: Path
) -> None:
    results = await run_eval(write_eval(tmp_path, ["busy", "quota"], concurrency=1), gw)
    busy, quota = results.cases
    assert busy.A.runs[0].output == "echo: busy"
    assert busy.A.verdict == "pass"
    assert quota.A.runs[0].error == "HTTP 429: budget spent"
    sent = [body["messages"][-1]["content"] for body in gw.bodies]
    assert (sent.count("busy"), sent.count("quota")) == (4, 2)  # 2 refused, then A's and B's


async def test_cost_is_summed_from_the_gateway_cost_header(gw: Gateway, tmp_path: Path) -> None:
    tally = Tally()
    results = await run_eval(write_eval(tmp_path, ["a", "b", "c"]), gw, tally)
    summary = summarise(results)
    assert summary.A.cost_micros == summary.B.cost_micros == 3 * 1500
    assert (summary.A.prompt_tokens, summary.A.completion_tokens) == (21, 9)
    assert tally.planned_total == len(tally.replies) == 6
    assert sum(reply.cost_micros for reply in tally.replies) == 9000


async def test_missing_cost_header_counts_as_zero(gw: Gateway, tmp_path: Path) -> None:
    gw.cost = None
    results = await run_eval(write_eval(tmp_path, ["a"]), gw)
    assert summarise(results).A.cost_micros == 0


def test_cost_header_is_read_as_exact_micro_dollars() -> None:
    assert cost_micros("0.000123") == 123
    assert cost_micros("1.5") == 1_500_000
    assert cost_micros("0.0000005") == 1
    assert cost_micros("free") == 0
    assert cost_micros("-1") == 0
    assert cost_micros(None) == 0


async def test_request_is_an_openai_chat_completion_with_key_and_params(
    gw: Gateway, tmp_path: Path
) -> None:
    params = {"temperature": 0.2, "max_tokens": 12, "response_format": {"type": "json_object"}}
    await run_eval(write_eval(tmp_path, ["hi"], params=params), gw)
    by_system = sorted(gw.bodies, key=lambda body: len(body["messages"]))
    assert by_system[0] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        **params,
    }
    assert by_system[1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert {h["Authorization"] for h in gw.headers} == {f"Bearer {KEY}"}


async def test_repetitions_after_the_first_bypass_the_cache(gw: Gateway, tmp_path: Path) -> None:
    results = await run_eval(write_eval(tmp_path, ["hi"], repetitions=3), gw)
    assert len(gw.bodies) == 6
    assert sorted(h.get("Cache-Control", "") for h in gw.headers) == ["", ""] + ["no-cache"] * 4
    assert [len(case.A.runs) for case in results.cases] == [3]
    assert summarise(results).A.consistency == 1.0


async def test_cache_false_bypasses_the_cache_on_every_request(gw: Gateway, tmp_path: Path) -> None:
    await run_eval(write_eval(tmp_path, ["hi"], cache=False), gw)
    assert [h.get("Cache-Control") for h in gw.headers] == ["no-cache", "no-cache"]


async def test_requests_in_flight_never_exceed_the_concurrency(gw: Gateway, tmp_path: Path) -> None:
    await run_eval(write_eval(tmp_path, [f"c{i}" for i in range(10)], concurrency=3), gw)
    assert len(gw.bodies) == 20
    assert gw.max_in_flight == 3


async def test_judge_grades_through_the_gateway_and_costs_apart(
    gw: Gateway, tmp_path: Path
) -> None:
    cases = [
        {
            "id": "polite",
            "vars": {"text": "please"},
            "checks": [{"type": "judge", "rubric": "Polite?"}],
        },
        {
            "id": "rambles",
            "vars": {"text": "x"},
            "checks": [{"type": "judge", "rubric": "Polite?"}],
        },
    ]
    path = write_eval(tmp_path, [], judge={"model": "gpt-4o"})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    results = await run_eval(path, gw)
    polite, rambles = results.cases
    assert polite.A.verdict == "pass"
    assert polite.A.runs[0].checks[0].detail == "polite enough"
    assert rambles.A.verdict == "error"
    assert "judge answer not PASS/FAIL" in rambles.A.runs[0].checks[0].detail
    judge_bodies = [b for b in gw.bodies if b["model"] == "gpt-4o"]
    assert len(judge_bodies) == 4
    assert "Polite?" in judge_bodies[0]["messages"][1]["content"]
    assert (results.judge_cost_micros, results.judge_tokens) == (4 * 1500, 40)
    assert summarise(results).A.cost_micros == 2 * 1500


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("PASS: states the label", (True, "states the label")),
        ("  fail - too long\nmore text", (False, "too long")),
        ("**PASS**: ok", (True, "ok")),
        ("FAIL", (False, "")),
        ("The answer passes.", None),
        ("", None),
    ],
)
def test_judge_answer_is_read_as_pass_or_fail_with_reason(
    answer: str, verdict: tuple[bool, str] | None
) -> None:
    assert parse_verdict(answer) == verdict

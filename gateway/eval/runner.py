"""Run a validated plan through the gateway: every case, prompt and repetition, then the judge."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.eval.checks import CheckOutcome, JudgeCheck
from gateway.eval.client import GatewayClient, Reply
from gateway.eval.config import SIDES, Side
from gateway.eval.judge import judge_body, judge_outcome
from gateway.eval.plan import Plan
from gateway.eval.results import CaseResult, EvalResults, PromptInfo
from gateway.eval.scoring import score_run, side_result

# (case index, prompt, repetition)
RunKey = tuple[int, Side, int]


class Progress(Protocol):
    """Told how many requests are coming, then about each one as it completes."""

    def planned(self, requests: int) -> None: ...

    def done(self, reply: Reply) -> None: ...


@dataclass(slots=True)
class _Judged:
    outcomes: dict[RunKey, list[CheckOutcome]] = field(default_factory=dict)
    cost_micros: int = 0
    tokens: int = 0


async def execute(plan: Plan, progress: Progress) -> EvalResults:
    """Send every request (bounded by the plan's concurrency) and score the answers."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    async with GatewayClient(plan.url, plan.key, plan.concurrency, plan.timeout_s) as client:
        replies = await _ask_all(client, plan, progress)
        judged = await _judge_all(client, plan, replies, progress)
    return _assemble(plan, replies, judged, started_at)


async def _ask_all(client: GatewayClient, plan: Plan, progress: Progress) -> dict[RunKey, Reply]:
    keys: list[RunKey] = [
        (i, side, rep)
        for i in range(len(plan.cases))
        for side in SIDES
        for rep in range(plan.repetitions)
    ]
    progress.planned(len(keys))

    async def ask(key: RunKey) -> Reply:
        index, side, rep = key
        prompt = plan.prompts[side]
        messages = list(plan.cases[index].messages[side])
        body: dict[str, Any] = {"model": prompt.model, "messages": messages, **prompt.params}
        reply = await client.chat(body, no_cache=rep > 0 or not plan.cache)
        progress.done(reply)
        return reply

    replies = await asyncio.gather(*(ask(key) for key in keys))
    return dict(zip(keys, replies, strict=True))


async def _judge_all(
    client: GatewayClient, plan: Plan, replies: dict[RunKey, Reply], progress: Progress
) -> _Judged:
    jobs = [
        (key, check)
        for key, reply in replies.items()
        if reply.output is not None
        for check in plan.cases[key[0]].judged
    ]
    judged = _Judged()
    if not jobs or plan.judge is None:
        return judged
    spec = plan.judge
    progress.planned(len(jobs))

    async def grade(key: RunKey, check: JudgeCheck) -> Reply:
        task = plan.cases[key[0]].messages[key[1]]
        body = judge_body(spec, check, task, replies[key].output or "")
        reply = await client.chat(body, no_cache=not plan.cache)
        progress.done(reply)
        return reply

    verdicts = await asyncio.gather(*(grade(key, check) for key, check in jobs))
    for (key, _), reply in zip(jobs, verdicts, strict=True):
        judged.outcomes.setdefault(key, []).append(judge_outcome(reply))
        judged.cost_micros += reply.cost_micros
        judged.tokens += reply.tokens
    return judged


def _assemble(
    plan: Plan, replies: dict[RunKey, Reply], judged: _Judged, started_at: str
) -> EvalResults:
    prompts = {
        side: PromptInfo(label=p.label, model=p.model, expects_json=p.expects_json)
        for side, p in plan.prompts.items()
    }
    return EvalResults(
        eval_file=str(plan.eval_file),
        started_at=started_at,
        repetitions=plan.repetitions,
        A=prompts["A"],
        B=prompts["B"],
        judge_cost_micros=judged.cost_micros,
        judge_tokens=judged.tokens,
        cases=[_case_result(plan, i, replies, judged) for i in range(len(plan.cases))],
    )


def _case_result(
    plan: Plan, index: int, replies: dict[RunKey, Reply], judged: _Judged
) -> CaseResult:
    case = plan.cases[index]
    sides = {}
    for side in SIDES:
        runs = [
            score_run(
                replies[(index, side, rep)],
                case,
                plan.prompts[side],
                judged.outcomes.get((index, side, rep), []),
            )
            for rep in range(plan.repetitions)
        ]
        sides[side] = side_result(runs, has_checks=bool(case.checks))
    return CaseResult(id=case.case.id, vars=case.case.vars, A=sides["A"], B=sides["B"])

"""Cost on every answer, budgets that hold under concurrency, rate limits — on both stores."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.accounting import local_periods
from gateway.drain import DRAIN
from gateway.mock import MockState, ScriptStep
from gateway.routes import STORE
from gateway.store.accounting import ACCOUNTING, PREFIX, Accounting
from tests.conftest import KEY_A, KEY_B, sha

Client = TestClient[Any, Any]
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
# A model priced so that numbers are round: $4000 per 1M output tokens = $0.004 per token.
PRICING = {"budget-model": {"input": 0, "output": 4000}}
REPLY_40_CHARS = "abcd efgh ijkl mnop qrst uvwx yzab cdef"  # 10 tokens for the mock → $0.04
CHAT = {"model": "budget-model", "max_tokens": 25, "messages": [{"role": "user", "content": "x"}]}


def _routes(**chat: Any) -> list[dict[str, Any]]:
    return [
        {"name": "chat", "match": {"path": "/v1/chat/completions"}, "provider": "openai", **chat},
        {"name": "openai", "match": {"path": "/v1/*"}, "provider": "openai"},
        {"name": "claude", "match": {"path": "/v1/messages*"}, "provider": "anthropic"},
    ]


def _keys(a: dict[str, Any] | None = None, b: dict[str, Any] | None = None) -> list[Any]:
    return [
        {"name": "team-a", "key_sha256": sha(KEY_A), "routes": ["*"], **(a or {})},
        {"name": "team-b", "key_sha256": sha(KEY_B), "routes": ["*"], **(b or {})},
    ]


@pytest.fixture
def budgeted(
    make_gateway: Callable[..., Awaitable[Client]], store_url: str
) -> Callable[..., Awaitable[Client]]:
    async def make(**overrides: Any) -> Client:
        sections: dict[str, Any] = {
            "storage": {"url": store_url},
            "pricing": PRICING,
            "routes": _routes(),
            "keys": _keys(),
        }
        return await make_gateway(**{**sections, **overrides})

    return make


async def test_buffered_answer_carries_its_cost(
    budgeted: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await budgeted(pricing={})
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    resp = await gateway.post("/v1/chat/completions", json=payload, headers=A)
    usage = (await resp.json())["usage"]
    # gpt-4o-mini: $0.15 in, $0.60 out per 1M tokens, rounded up to the micro-dollar.
    expected = -(
        -(usage["prompt_tokens"] * 150_000 + usage["completion_tokens"] * 600_000) // 1_000_000
    )
    assert resp.headers["x-gateway-cost-usd"] == f"0.{expected:06d}"


async def test_a_snapshot_priced_apart_from_its_model_is_billed_at_its_own_price(
    budgeted: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await budgeted(pricing={})
    payload = {"model": "gpt-4o-2024-05-13", "messages": [{"role": "user", "content": "hello"}]}
    resp = await gateway.post("/v1/chat/completions", json=payload, headers=A)
    usage = (await resp.json())["usage"]
    # The first gpt-4o snapshot lists at $5 in, $15 out per 1M tokens: twice gpt-4o's input.
    expected = -(
        -(usage["prompt_tokens"] * 5_000_000 + usage["completion_tokens"] * 15_000_000) // 1_000_000
    )
    assert resp.headers["x-gateway-cost-usd"] == f"0.{expected:06d}"


async def test_key_budget_exhausted_is_429_insufficient_quota_naming_reset(
    budgeted: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await budgeted(keys=_keys(a={"budget": {"usd_per_day": 0.20}}))
    headers = {**A, "x-mock-reply": REPLY_40_CHARS}
    first = await gateway.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert first.status == 200
    assert first.headers["x-gateway-cost-usd"] == "0.040000"
    # $0.20 - $0.10 held for this request's worst case = $0.10 left while it ran.
    assert first.headers["x-gateway-budget-remaining-usd"] == "0.100000"
    # Spent $0.04 and $0.08 before the next two: each still fits its $0.10 worst case.
    for _ in range(2):
        assert (
            await gateway.post("/v1/chat/completions", json=CHAT, headers=headers)
        ).status == 200
    third = await gateway.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert third.status == 429
    assert (third.headers["x-gateway-route"], third.headers["x-gateway-attempts"]) == ("chat", "0")
    assert third.headers["x-should-retry"] == "false"
    error = (await third.json())["error"]
    assert error["code"] == "insufficient_quota"
    assert error["type"] == "insufficient_quota"
    spent = "key 'team-a' has spent or reserved $0.120000 of its $0.200000 budget this day"
    assert spent in error["message"]
    assert "resets at" in error["message"]
    assert error["message"].endswith("T00:00:00Z.")
    assert len(mock.requests) == 3
    other = await gateway.post("/v1/chat/completions", json=CHAT, headers=B)
    assert other.status == 200  # another key's budget is its own


async def test_budget_error_on_messages_is_in_anthropic_shape(
    budgeted: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await budgeted(
        keys=_keys(a={"budget": {"usd_per_month": 0.01}}),
        pricing={"claude-x": {"input": 1000, "output": 1000}},
    )
    payload = {"model": "claude-x", "max_tokens": 100, "messages": []}
    resp = await gateway.post("/v1/messages", json=payload, headers={"x-api-key": KEY_A})
    assert resp.status == 429
    body = await resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert "Budget exhausted" in body["error"]["message"]


async def test_route_budget_caps_all_keys_together(
    budgeted: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await budgeted(routes=_routes(budget={"usd_per_month": 0.1}))
    headers = {"x-mock-reply": REPLY_40_CHARS}
    assert (
        await gateway.post("/v1/chat/completions", json=CHAT, headers={**A, **headers})
    ).status == 200
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers={**B, **headers})
    assert resp.status == 429
    assert "route 'chat'" in (await resp.json())["error"]["message"]


async def test_key_budget_scoped_to_one_route(
    budgeted: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await budgeted(keys=_keys(a={"route_budgets": {"chat": {"usd_per_month": 0.05}}}))
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=A)
    assert resp.status == 429
    assert "key 'team-a' on route 'chat'" in (await resp.json())["error"]["message"]
    embeddings = {"model": "budget-model", "input": "x"}
    assert (await gateway.post("/v1/embeddings", json=embeddings, headers=A)).status == 200


async def test_tokens_per_month_budget(budgeted: Callable[..., Awaitable[Client]]) -> None:
    gateway = await budgeted(keys=_keys(a={"budget": {"tokens_per_month": 40}}))
    resp = await gateway.post("/v1/chat/completions", json={**CHAT, "max_tokens": 100}, headers=A)
    assert resp.status == 429
    message = (await resp.json())["error"]["message"]
    assert "has spent or reserved 0 of its 40 tokens this month" in message
    assert "(this request may use up to " in message  # in tokens, as the budget counts
    assert "$" not in message


async def test_rate_limit_rpm_answers_429_with_retry_headers(
    budgeted: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await budgeted(keys=_keys(a={"rate_limit": {"rpm": 3}}))
    statuses = []
    for _ in range(4):
        resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=A)
        statuses.append(resp.status)
    assert statuses == [200, 200, 200, 429]
    assert resp.headers["x-should-retry"] == "true"
    assert 0 < int(resp.headers["retry-after-ms"]) <= 20_000
    assert resp.headers["Retry-After"] == str(-(-int(resp.headers["retry-after-ms"]) // 1000))
    assert resp.headers["x-ratelimit-limit-requests"] == "3"
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"
    assert len(mock.requests) == 3


async def test_successful_response_shows_remaining_requests(
    budgeted: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await budgeted(keys=_keys(a={"rate_limit": {"rpm": 60}}))
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=A)
    assert resp.headers["x-ratelimit-limit-requests"] == "60"
    assert resp.headers["x-ratelimit-remaining-requests"] == "59"


async def test_concurrent_requests_never_hold_more_than_the_budget(
    budgeted: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await budgeted(keys=_keys(a={"budget": {"usd_per_month": 1.0}}))
    store = gateway.app[ACCOUNTING]
    held_peaks: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            held_peaks.append((await store.read([_month("held")]))[0])
            await asyncio.sleep(0.005)

    headers = {**A, "x-mock-reply": REPLY_40_CHARS, "x-mock-latency-ms": "100"}
    watcher = asyncio.create_task(watch())
    responses = await asyncio.gather(
        *(gateway.post("/v1/chat/completions", json=CHAT, headers=headers) for _ in range(50))
    )
    done.set()
    await watcher
    ok = sum(r.status == 200 for r in responses)
    assert {r.status for r in responses} <= {200, 429}
    assert 10 <= ok <= 25  # $1.00 / $0.10 worst case at once; more as earlier ones settle
    assert max(held_peaks) <= 1_000_000
    assert await store.read([_month("spent"), _month("held")]) == [ok * 40_000, 0]
    assert await store.open_reservations() == 0
    assert len(mock.requests) == ok


async def test_concurrent_requests_sharing_a_client_request_id_are_each_billed(
    budgeted: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    """A client may send the same x-request-id on requests in flight together (a retry
    reusing its trace id, a constant id): each is still held, billed and released once."""
    gateway = await budgeted(keys=_keys(a={"budget": {"usd_per_month": 10.0}}))
    store = gateway.app[ACCOUNTING]
    headers = {**A, "x-mock-reply": REPLY_40_CHARS, "x-request-id": "same-trace-id"}
    slow = {**headers, "x-mock-latency-ms": "200"}
    responses = await asyncio.gather(
        gateway.post("/v1/chat/completions", json=CHAT, headers=slow),
        *(gateway.post("/v1/chat/completions", json=CHAT, headers=headers) for _ in range(4)),
    )
    assert [r.status for r in responses] == [200] * 5
    assert {r.headers["x-request-id"] for r in responses} == {"same-trace-id"}  # echoed
    assert await gateway.app[DRAIN].wait_idle(5)
    assert await store.read([_month("spent"), _month("held")]) == [5 * 40_000, 0]
    assert await store.open_reservations() == 0
    assert len(mock.requests) == 5


async def test_unpriced_model_is_billed_at_its_reservation(
    budgeted: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await budgeted(
        accounting={"unpriced_request_usd": 0.25}, keys=_keys(a={"budget": {"usd_per_month": 10}})
    )
    payload = {"model": "mystery-model", "messages": [{"role": "user", "content": "x"}]}
    resp = await gateway.post("/v1/chat/completions", json=payload, headers=A)
    assert resp.status == 200
    assert resp.headers["x-gateway-cost-usd"] == "0.250000"


async def test_store_down_refuses_keys_with_a_budget_but_not_others(
    budgeted: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await budgeted(
        storage={"url": "redis://127.0.0.1:1/0"},
        keys=_keys(a={"budget": {"usd_per_month": 10}}),
    )
    refused = await gateway.post("/v1/chat/completions", json=CHAT, headers=A)
    assert refused.status == 503
    assert refused.headers["x-should-retry"] == "false"
    assert (await refused.json())["error"]["code"] == "budget_store_unavailable"
    unbudgeted = await gateway.post("/v1/chat/completions", json=CHAT, headers=B)
    assert unbudgeted.status == 200


@pytest.mark.parametrize(
    "limits",
    [{"budget": {"usd_per_day": 0.0001}}, {"rate_limit": {"tpm": 10}}],
)
async def test_anthropics_version_header_does_not_make_a_model_endpoint_free(
    budgeted: Callable[..., Awaitable[Client]], mock: MockState, limits: dict[str, Any]
) -> None:
    """The header chooses the error format of paths that have none of their own; an OpenAI
    model endpoint stays priced, budgeted and rate limited, and answers in OpenAI's format."""
    gateway = await budgeted(keys=_keys(a=limits))
    headers = {**A, "anthropic-version": "2023-06-01"}
    resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=headers)
    body = await resp.json()
    assert resp.status == 429
    assert body["error"]["code"] in ("insufficient_quota", "request_too_large_for_limit")
    assert "type" not in body  # OpenAI's shape: Anthropic's has {"type": "error", ...}
    assert mock.requests == []


class _Outage:
    """Every store command fails while `down`, as against a store that is out."""

    def __init__(self, gateway: Client) -> None:
        store = gateway.app[STORE]
        self.down, self._send = False, store.execute_command
        store.execute_command = self._command  # type: ignore[method-assign]

    async def _command(self, *args: Any, **options: Any) -> Any:
        if self.down:
            raise RedisConnectionError("the store is out")
        return await self._send(*args, **options)


async def test_spend_within_the_outage_allowance_is_charged_once_the_store_is_back(
    budgeted: Callable[..., Awaitable[Client]],
) -> None:
    """The allowance counts what a request cost once it is settled (not its worst case), the
    spend reaches the budget when the store is back, and the next outage has the whole
    allowance again."""
    gateway = await budgeted(
        accounting={"budget_on_store_error": "allowance"},
        keys=_keys(a={"budget": {"usd_per_month": 0.1}, "outage_allowance_usd": 0.15}),
    )
    outage, accounting = _Outage(gateway), gateway.app[ACCOUNTING]
    headers = {**A, "x-mock-reply": REPLY_40_CHARS}  # $0.04 each, $0.10 held at worst

    async def statuses(n: int) -> list[int]:
        return [
            (await gateway.post("/v1/chat/completions", json=CHAT, headers=headers)).status
            for _ in range(n)
        ]

    outage.down = True
    assert await statuses(3) == [200, 200, 503]  # $0.04 + $0.04 + $0.10 is over $0.15
    outage.down = False
    with structlog.testing.capture_logs() as logs:
        await accounting.flush_stats()
    assert await accounting.read([_month("spent")]) == [80_000]
    charged = [line for line in logs if line["event"] == "outage_spend_charged"]
    assert [(c["key"], c["cost_usd"]) for c in charged] == [("team-a", "0.080000")]
    crossed = [(c["scope"], c["percent"]) for c in logs if c["event"] == "budget_threshold"]
    assert crossed == [("k:team-a", 50), ("k:team-a", 80)]  # $0.08 of $0.10, told once
    outage.down = True
    assert await statuses(3) == [200, 200, 503]  # the allowance is whole again


async def test_spend_served_unchecked_that_the_store_never_takes_is_logged_with_its_cost(
    budgeted: Callable[..., Awaitable[Client]],
) -> None:
    """At shutdown, with the store still out: the spend is not lost, but in the log."""
    gateway = await budgeted(
        accounting={"budget_on_store_error": "allowance"},
        keys=_keys(a={"budget": {"usd_per_month": 10}, "outage_allowance_usd": 1}),
    )
    outage, accounting = _Outage(gateway), gateway.app[ACCOUNTING]
    outage.down = True
    headers = {**A, "x-mock-reply": REPLY_40_CHARS}
    for _ in range(2):
        resp = await gateway.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert resp.status == 200
    await accounting.flush_stats()  # the store is still out: kept
    with structlog.testing.capture_logs() as logs:
        accounting.report_unsent()
    lost = [(line["key"], line["cost_usd"]) for line in logs if line["event"] == "spend_not_stored"]
    assert lost == [("team-a", "0.080000")]


async def test_cut_stream_is_billed_from_what_was_delivered(
    budgeted: Callable[..., Awaitable[Client]], mock: MockState
) -> None:
    gateway = await budgeted(keys=_keys(a={"budget": {"usd_per_month": 10}}))
    mock.push([ScriptStep(reply="a b c d e f g h", cut_after=4)])
    resp = await gateway.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=A)
    await resp.read()  # the stream ends once its bill is settled
    (spent,) = await gateway.app[ACCOUNTING].read([_month("spent")])
    assert spent > 0
    assert await gateway.app[ACCOUNTING].open_reservations() == 0


def _month(kind: str, scope: str = "k:team-a") -> str:
    return f"{kind}:{scope}:m{local_periods()[1]}"


COUNTERS = ("spent:", "held:", "tokens:", "heldtok:")


async def _counter_ttls(gateway: Client) -> dict[str, int]:
    store = gateway.app[STORE]
    names = [k.decode() async for k in store.scan_iter(match=f"{PREFIX}*")]
    counters = [n for n in names if n.removeprefix(PREFIX).startswith(COUNTERS)]
    return {n.removeprefix(PREFIX): await store.ttl(n) for n in counters}


async def test_spend_counters_expire_whoever_creates_them(
    budgeted: Callable[..., Awaitable[Client]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every budget counter (spent and held, money and tokens, day and month) gets an expiry
    when it is created, by a settle or by the sweep of a crashed process's reservation: the
    store does not keep a key per scope and period forever."""
    limits = {"usd_per_day": 10, "usd_per_month": 100, "tokens_per_month": 10**6}
    gateway = await budgeted(keys=_keys(a={"budget": limits}), accounting={"reservation_ttl_s": 1})
    assert (await gateway.post("/v1/chat/completions", json=CHAT, headers=A)).status == 200
    settled = await _counter_ttls(gateway)
    assert {name.split(":")[0] for name in settled} == {"spent", "held", "tokens", "heldtok"}
    assert all(0 < ttl <= 400 * 86400 for ttl in settled.values()), settled

    # A process that dies holding a reservation: its settle never comes; the sweep charges it.
    dead = asyncio.Event()

    async def never(self: Accounting, *args: Any, **kwargs: Any) -> None:
        await dead.wait()  # then nothing: the process is gone

    monkeypatch.setattr(Accounting, "settle", never)
    await gateway.app[STORE].flushdb()
    task = asyncio.create_task(gateway.post("/v1/chat/completions", json=CHAT, headers=A))
    await asyncio.sleep(1.2)  # past the reservation's time to live
    assert await gateway.app[ACCOUNTING].sweep() == 1
    swept = await _counter_ttls(gateway)
    assert {n for n in swept if n.startswith("spent:")}, swept
    assert all(0 < ttl <= 400 * 86400 for ttl in swept.values()), swept
    dead.set()
    await task

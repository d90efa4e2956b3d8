"""Send chat completions to the gateway and turn each answer, or failure, into a Reply."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from gateway.retry import retry_after_s

COST_HEADER = "x-gateway-cost-usd"
CACHE_HEADER = "x-gateway-cache"
# A request the gateway refuses for now (the key's rate limit) is sent again after the wait
# it advises, for at most this long in all: a large test set outlasts a per-minute limit.
MAX_WAIT_S = 600.0
DEFAULT_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer; `error` is set instead of `output` when the request failed."""

    output: str | None = None
    error: str | None = None
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0
    cache: str | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class GatewayClient:
    """One ClientSession for a whole eval; at most `concurrency` requests in flight."""

    def __init__(self, url: str, key: str, concurrency: int, timeout_s: float) -> None:
        self._endpoint = f"{url}/v1/chat/completions"
        self._key = key
        self._limit = asyncio.Semaphore(concurrency)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> GatewayClient:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def chat(self, body: dict[str, Any], *, no_cache: bool = False) -> Reply:
        """POST one chat completion; every failure becomes a Reply with `error` set."""
        assert self._session is not None, "use GatewayClient as an async context manager"
        headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"}
        if no_cache:
            headers["Cache-Control"] = "no-cache"
        data = orjson.dumps(body)
        async with self._limit:
            waited = 0.0
            while True:
                reply, wait_s = await self._post(data, headers)
                if wait_s is None or waited + wait_s > MAX_WAIT_S:
                    return reply
                await asyncio.sleep(wait_s)
                waited += wait_s

    async def _post(self, data: bytes, headers: dict[str, str]) -> tuple[Reply, float | None]:
        """One try: the reply, and how long to wait before sending it again when the gateway
        says to (its rate limit: `x-should-retry: true`), else None."""
        assert self._session is not None
        started = time.perf_counter()
        try:
            async with self._session.post(
                self._endpoint, data=data, headers=headers, timeout=self._timeout
            ) as response:
                raw = await response.read()
        except TimeoutError:
            return Reply(error=f"timeout after {self._timeout.total:g}s"), None
        except aiohttp.ClientError as exc:
            return Reply(error=f"connection error: {exc or type(exc).__name__}"), None
        latency_ms = (time.perf_counter() - started) * 1000
        reply = parse_reply(response.status, response.headers, raw, latency_ms)
        return reply, _wait_before_resending(response.status, response.headers)


def _wait_before_resending(status: int, headers: CIMultiDictProxy[str]) -> float | None:
    """The gateway's advice for a refused request: wait `retry-after-ms` / `Retry-After`
    (a second when it gives none) when it says `x-should-retry: true`; None otherwise."""
    if status < 400 or headers.get("x-should-retry", "").strip().lower() != "true":
        return None
    wait_s = retry_after_s(headers, time.time())
    return DEFAULT_WAIT_S if wait_s is None else wait_s


def parse_reply(
    status: int, headers: CIMultiDictProxy[str], raw: bytes, latency_ms: float
) -> Reply:
    """Read the answer, usage, cost and cache state from an OpenAI-shaped response."""
    cost = cost_micros(headers.get(COST_HEADER))
    cache = headers.get(CACHE_HEADER)
    if status != 200:
        error = f"HTTP {status}: {_error_message(raw)}"
        return Reply(error=error, latency_ms=latency_ms, cost_micros=cost, cache=cache)
    try:
        data = orjson.loads(raw)
        content = data["choices"][0]["message"].get("content")
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        error = f"bad response: {type(exc).__name__}: {str(exc)[:200]}"
        return Reply(error=error, latency_ms=latency_ms, cost_micros=cost, cache=cache)
    return Reply(
        output=content if isinstance(content, str) else "",
        latency_ms=latency_ms,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_micros=cost,
        cache=cache,
    )


def cost_micros(header: str | None) -> int:
    """The gateway's cost header (decimal USD) as integer micro-dollars; 0 when absent."""
    if not header:
        return 0
    try:
        micros = (Decimal(header.strip()) * 1_000_000).to_integral_value(ROUND_HALF_UP)
    except InvalidOperation:
        return 0
    return int(micros) if micros.is_finite() and micros >= 0 else 0


def _error_message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
        message = data["error"]["message"]
        if isinstance(message, str):
            return message[:300]
    except (ValueError, KeyError, TypeError):
        pass
    text = raw.decode("utf-8", errors="replace").strip()
    return text[:300] or "(empty body)"

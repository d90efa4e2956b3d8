"""The mock provider's per-app state: recorded requests and scripted answers, per model."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

ANY_MODEL = "*"
# Past this many recorded requests the oldest half is dropped, so a long benchmark run
# cannot grow the mock's memory without bound; tests stay far below it.
RECORD_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received, before any fault was applied. Header names are lower-cased."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class ScriptStep:
    """How to answer one request; the defaults give a normal 200 answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    error_code: str | None = None  # goes in the error body's code (OpenAI) or type (Anthropic)
    latency_s: float = 0.0  # before the response headers
    ttfb_s: float = 0.0  # streams: after the headers, before the first chunk
    chunk_delay_s: float = 0.0  # streams: between chunks
    cut_after: int | None = None  # streams: this many chunks, answers: bytes; then it breaks
    malformed: bool = False  # a truncated JSON body with status 200
    reply: str | None = None  # the answer text
    cached_tokens: int | None = None  # None: from `x-mock-cached-tokens`, else 0
    redirect: str | None = None  # answer 307 with this Location
    echo_headers: bool = False  # an error whose message lists every request header


DEFAULT_STEP = ScriptStep()


@dataclass(slots=True)
class MockState:
    """Everything one mock app remembers; tests read and script it directly."""

    requests: list[RecordedRequest] = field(default_factory=list)
    scripts: dict[str, collections.deque[ScriptStep]] = field(default_factory=dict)
    served: int = 0  # answers given so far, numbering their ids

    def reset(self) -> None:
        self.requests.clear()
        self.scripts.clear()

    def push(self, steps: Iterable[ScriptStep], model: str = ANY_MODEL) -> None:
        """Queue steps for `model` ("*": any model); each answers one request, in order."""
        self.scripts.setdefault(model, collections.deque()).extend(steps)

    def pop_step(self, model: str) -> ScriptStep | None:
        """The next step scripted for this model, else for any model, else None."""
        for key in (model, ANY_MODEL):
            queue = self.scripts.get(key)
            if queue:
                return queue.popleft()
        return None

    def record(self, request: RecordedRequest) -> None:
        if len(self.requests) >= RECORD_LIMIT:
            del self.requests[: RECORD_LIMIT // 2]
        self.requests.append(request)

    def next_serial(self) -> int:
        self.served += 1
        return self.served


MOCK_STATE: web.AppKey[MockState] = web.AppKey("mock_state", MockState)

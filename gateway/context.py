"""The per-request context: one object that every stage reads from and writes to."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from gateway.config import KeyConfig, RouteConfig
    from gateway.dialects import Dialect
    from gateway.providers import Provider
    from gateway.runtime import Runtime
    from gateway.stages.gates import Gate

# Run once the answer is decided: None when its work is done at once, else what is left of it
# to await (the request then ends in a task of its own).
FinishHook = Callable[["RequestContext"], Awaitable[None] | None]
StaleAnswer = Callable[["RequestContext"], Awaitable["web.StreamResponse | None"]]
# Given the request rather than holding it: a filter kept on the context that referred back to
# the context would leave every streamed request's objects to the cycle collector.
StreamFilter = Callable[["RequestContext", bytes], bytes]


@dataclass(slots=True)
class Usage:
    """Tokens as the provider reported them.

    `input_tokens` counts every input token, cached ones included; `cached_input_tokens`
    (read from a prompt cache) and `cache_write_tokens` (written to it) are parts of it.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


_FROM_CACHE = ("HIT", "STALE")


@dataclass(slots=True)
class RequestContext:
    """What the stages learn about one request, from arrival to the last byte sent."""

    request: web.Request
    runtime: Runtime
    request_id: str  # shown to the client and in the log: possibly the client's own
    dialect: Dialect
    # No other request's (the client may send one `x-request-id` on several at once): the key
    # of the request's budget reservation. Default: the request id, when the gateway made it.
    unique_id: str = ""
    started: float = field(default_factory=time.perf_counter)
    body: bytes = b""
    payload: dict[str, Any] | None = None
    model: str | None = None
    stream: bool = False
    key: KeyConfig | None = None
    route: RouteConfig | None = None
    provider: Provider | None = None
    upstream_model: str | None = None
    upstream_body: bytes = b""
    attempts: int = 0
    # Tries cut while the provider may have been working on them (a per-try timeout, a hedge
    # that lost, the deadline, the client gone): each may be billed, with no usage seen.
    cut_tries: int = 0
    status: int | None = None
    outcome: str = "ok"
    error_code: str | None = None
    ttfb_s: float | None = None
    # The upstream exchange, when one was made: from once the limits' verdict was in (the
    # store's reply is the gateway's own time) to its last byte relayed.
    upstream_started: float | None = None
    upstream_s: float | None = None
    # Waiting for an identical request's upstream exchange (single-flight): the provider's
    # time too, not the gateway's.
    twin_wait_s: float = 0.0
    # Waiting on the request's way for the store: its limits' verdict (with the cache lookup
    # that rides in it) and its bill, each round trip with the work around it. Part of the
    # gateway's own time.
    store_wait_s: float = 0.0
    usage: Usage | None = None
    # A stream's usage is its final report (not only the input counted at its start): a
    # stream cut after it is billed from it, not estimated.
    usage_final: bool = False
    # Money, in integer micro-dollars: what this request cost (None until accounted), how that
    # was known (usage, estimate, reserved, unpriced, cache, none), what a cache hit saved.
    cost_micro: int | None = None
    # SSE events relayed whole to the client, once the relay ends (an estimate of output
    # tokens when a stream is cut).
    stream_events: int = 0
    cost_source: str | None = None
    saved_micro: int = 0
    # HIT, MISS, BYPASS or STALE once the cache stage has run; on HIT/STALE `usage` is the
    # original answer's (what the hit saved), and no upstream tokens were spent.
    cache_status: str | None = None
    # Output anomalies seen in the answer (invalid_json, empty, truncated, refusal).
    anomalies: list[str] = field(default_factory=list)
    # The buffered answer body the client received (None for streams and errors), and the
    # object it parses to when the gateway read it (parsed once, for usage, checks, cache).
    response_body: bytes | None = None
    response_parsed: Any = None
    # When True, the terminal stage keeps the raw upstream chunks of a successful stream.
    capture_stream: bool = False
    captured: list[bytes] = field(default_factory=list)
    # Applied to each stream chunk before it reaches the client (after capture and usage).
    stream_filter: StreamFilter | None = None
    # Set by the cache: an answer to serve when every upstream target failed.
    stale_answer: StaleAnswer | None = None
    # Headers every response to this request carries (set before the response is prepared).
    response_headers: dict[str, str] = field(default_factory=dict)
    # Work run once the response is finished (last byte sent, or the client gone).
    on_finish: list[FinishHook] = field(default_factory=list)
    # The check a stage set up before the upstream call (see gateway.stages.gates).
    gate: Gate | None = None
    app: web.Application = field(init=False)  # the request's, read once: a property there

    def __post_init__(self) -> None:
        self.app = self.request.app
        if not self.unique_id:
            self.unique_id = self.request_id

    @property
    def from_cache(self) -> bool:
        """Answered from a cache entry (a hit, or a stale one when every target failed): no
        tokens spent upstream, nothing billed."""
        return self.cache_status in _FROM_CACHE

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def overhead_s(self, elapsed_s: float) -> float:
        """Of `elapsed_s` (the request's time so far), the gateway's own: all of it but the
        upstream exchange, its own or a twin's it waited for. All of it for a request that
        waited for none (a cache hit, a refusal)."""
        upstream = self.upstream_s
        own = elapsed_s - self.twin_wait_s - (0.0 if upstream is None else upstream)
        return max(0.0, own)

    def target(self) -> tuple[RouteConfig, Provider]:
        """The route and provider chosen by the routing stage."""
        if self.route is None or self.provider is None:
            raise RuntimeError("the routing stage has not run")
        return self.route, self.provider

    def authenticated_key(self) -> KeyConfig:
        if self.key is None:
            raise RuntimeError("the authentication stage has not run")
        return self.key

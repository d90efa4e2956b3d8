"""Stage: answer from the response cache, or let the request through and store its answer.

Acts after routing (it needs the route's cache policy, the provider and the upstream body)
and before the upstream call; a route without an enabled `cache` section passes straight on.
A hit, or an answer shared by single-flight, is served without calling the next stage. The
answer of a miss is collected when the next stage returns (by then a buffered body is read
and a stream has been relayed to its end), handed at once to this process's waiting
followers, and written to the store: in the request's settle, when it holds a reservation
(see gateway.stages.gates.carry), else in the background.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import orjson
from aiohttp import web

from gateway.cache.capture import CAPTURE_FACTOR, CaptureLimit, asks_usage
from gateway.cache.collect import collect
from gateway.cache.entries import Entry, now_ms
from gateway.cache.keys import answer_headers, partition, request_digest
from gateway.cache.policy import Kind, Plan, plan_request
from gateway.cache.replay import respond, streams
from gateway.cache.singleflight import FOLLOW_WAIT_S, LOCK_TTL_S, Flight, await_remote_leader
from gateway.cache.state import CACHE_STATE, CacheState
from gateway.cache.storage import CacheStore, Lookup, entry_key
from gateway.config import CacheConfig
from gateway.context import RequestContext
from gateway.deadline import CLIENT_TIMEOUT_HEADER, SDK_TIMEOUT_HEADER, request_deadline
from gateway.drain import DRAIN
from gateway.errors import GatewayError
from gateway.pipeline import Next
from gateway.stages.gates import Carried, Probe, carry, passed, probe, verdict_in
from gateway.store.coalesce import BACKGROUND

HEADER = "x-gateway-cache"
T = TypeVar("T")


async def cache_responses(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
    route, provider = ctx.target()
    config = route.cache
    if config is None or not config.enabled:
        return await call_next(ctx)
    request = ctx.request
    try:
        plan = plan_request(
            request.method, request.path, request.headers, ctx.payload, provider.kind, config
        )
        key = _key(ctx, config) if plan.kind is not None and plan.write else ""
    except GatewayError:
        await passed(ctx, hold=False)  # a refusal by the limits comes first, as it always has
        raise
    state = ctx.app[CACHE_STATE]
    try:
        if plan.kind is None or not plan.write:
            mark(ctx, "BYPASS")
            return await call_next(ctx)
        job = _Job(ctx, plan.kind, plan, config, key, state.store(ctx.app), state.writing)
        if not plan.read:  # Cache-Control: no-cache: a fresh answer, which refreshes the entry
            mark(ctx, "BYPASS")
            return (await job.fill(call_next))[0]
        return await _read_through(job, state, call_next)
    finally:
        state.stats.record(ctx.cache_status, ctx.usage)


def mark(ctx: RequestContext, status: str) -> None:
    ctx.cache_status = status
    ctx.response_headers[HEADER] = status


def _key(ctx: RequestContext, config: CacheConfig) -> str:
    _, provider = ctx.target()
    tenant = partition(ctx.authenticated_key().name, config.shared_across_keys)
    digest = request_digest(
        payload=ctx.payload or {},
        provider=provider.name,
        path=ctx.request.path,
        query=ctx.request.query_string,
        headers=answer_headers(ctx.request.headers),
        partition=tenant,
        raw=ctx.upstream_body,
    )
    return entry_key(tenant, digest)


async def _read_through(job: _Job, state: CacheState, call_next: Next) -> web.StreamResponse:
    """Lead the key's flight (one Redis round trip, then upstream), or follow the leader."""
    writing = state.writing.get(job.key)
    if writing is not None and writing.is_fresh(now_ms()):
        await passed(job.ctx, hold=False)  # served from memory: nothing to hold
        return job.serve(writing, "HIT")
    flight, leads = state.flights.join(job.key)
    if not leads:
        # A refused request waits for no leader. The leader's answer is shared as a hit,
        # which holds nothing; a follower left to go upstream alone is topped up there.
        await passed(job.ctx, hold=False)
        return await _follow(job, flight, call_next)
    shared: Entry | None = None
    token = job.ctx.unique_id  # random, and this request's alone: the lock's owner
    try:
        found = await job.lookup(token)
        if found.lock != "leader":
            token = ""  # nothing to release
        hold = found.fresh is None  # a hit holds nothing
        if not verdict_in(job.ctx, hold):  # the lookup rode in the verdict, usually
            await passed(job.ctx, hold)
        if found.fresh is None and found.lock == "follower":  # another replica is calling
            flight.stale = found.stale
            waiting = time.perf_counter()
            try:
                deadline_s = job.deadline_in_s()
                within_s = FOLLOW_WAIT_S if deadline_s is None else min(FOLLOW_WAIT_S, deadline_s)
                found = await await_remote_leader(job.store, job.key, within_s)
            finally:  # also when its client leaves while it waits
                job.ctx.twin_wait_s += time.perf_counter() - waiting
        if found.fresh is not None:
            shared = found.fresh
            return job.serve(found.fresh, "HIT")
        flight.stale = flight.stale or found.stale
        job.offer_stale(flight.stale)
        response, shared = await job.fill(call_next, token)
        return response
    finally:
        state.flights.land(job.key, flight, shared)
        if token and shared is None:
            await job.waited(job.store.release(job.key, token))


async def _follow(job: _Job, flight: Flight, call_next: Next) -> web.StreamResponse:
    """Wait for this process's leader; if it has nothing to share, go upstream alone."""
    waiting = time.perf_counter()
    try:
        entry = await flight.wait(job.deadline_in_s())
    finally:  # also when its client leaves while it waits
        job.ctx.twin_wait_s += time.perf_counter() - waiting
    if entry is not None:
        return job.serve(entry, "HIT")
    job.offer_stale(flight.stale)
    return (await job.fill(call_next))[0]


@dataclass(slots=True)
class _Job:
    """One cacheable request: its key, and how to serve, fill and store it."""

    ctx: RequestContext
    kind: Kind
    plan: Plan
    config: CacheConfig
    key: str
    store: CacheStore
    writing: dict[str, Entry]  # CacheState.writing

    async def lookup(self, token: str) -> Lookup:
        """The entry, and the key's lock for `token`. In the reservation's own command where
        the store allows (one round trip, and a hit holds nothing); else in the same round
        trip as the reservation, whose verdict still comes before any answer."""
        store = self.store
        rider = store.rider(self.key, token, LOCK_TTL_S)
        if rider is not None:
            read = Probe(rider)
            if await probe(self.ctx, read):
                if read.reply.done():  # it rode in the verdict, which is in
                    return await store.looked_up(read.reply)
                return await self.waited(store.looked_up(read.reply))
        return await self.waited(store.lookup(self.key, token, LOCK_TTL_S))

    async def waited(self, reply: Awaitable[T]) -> T:
        """`reply`, its wait counted as the request's wait for the store."""
        waiting = time.perf_counter()
        try:
            return await reply
        finally:
            self.ctx.store_wait_s += time.perf_counter() - waiting

    def deadline_in_s(self) -> float | None:
        """How long this request may still wait for a twin's answer: no longer than its
        deadline (the route's `timeout_s`, or a shorter one its client asked for). Past it,
        the upstream stage answers as for any request whose deadline passed (504, or a
        stale answer), and an SDK gets that answer before its own timer retries. None: no
        sooner than a twin's wait ends anyway (a route's timeout of FOLLOW_WAIT_S or more,
        counted from after the leader began, and no client asking for less)."""
        route, _ = self.ctx.target()
        headers = self.ctx.request.headers
        if (
            route.timeout_s >= FOLLOW_WAIT_S
            and CLIENT_TIMEOUT_HEADER not in headers
            and SDK_TIMEOUT_HEADER not in headers
        ):
            return None
        return request_deadline(route, headers, self.ctx.elapsed_s()).remaining_s()

    def serve(self, entry: Entry, status: str) -> web.Response:
        """A stored answer, in the form the client asked for (stream or not)."""
        ctx = self.ctx
        mark(ctx, status)
        ctx.usage = entry.usage  # what the answer cost when it was made: what this hit saved
        ctx.ttfb_s = ctx.elapsed_s()
        stream = ctx.stream and streams(entry)
        ctx.response_body = None if stream else entry.body
        return respond(entry, stream=stream, include_usage=stream and self.client_wants_usage())

    def offer_stale(self, entry: Entry | None) -> None:
        """Let the upstream stage serve an expired entry if every target fails."""
        if entry is None or self.plan.stale_s <= 0:
            return
        if now_ms() >= entry.expires_at_ms + self.plan.stale_s * 1000:
            return

        async def serve_stale(ctx: RequestContext) -> web.StreamResponse | None:
            return self.serve(entry, "STALE")

        self.ctx.stale_answer = serve_stale

    async def fill(
        self, call_next: Next, token: str = ""
    ) -> tuple[web.StreamResponse, Entry | None]:
        """Go upstream; store the answer if it is a complete success (releasing `token`)."""
        ctx = self.ctx
        if ctx.cache_status is None:
            mark(ctx, "MISS")
        self._capture()
        provider, model = ctx.provider, ctx.upstream_model
        response = await call_next(ctx)
        if ctx.cache_status == "STALE":
            return response, None
        entry = None
        # An answer from a fallback target is not the answer to this key's request.
        if ctx.provider is provider and ctx.upstream_model == model:
            entry = collect(
                ctx, self.kind, response.status, self.plan.ttl_s, self.config.max_entry_bytes
            )
        if entry is None:
            if 200 <= response.status < 300:  # an error answer is never one to store
                self.store.stats.not_stored += 1
            return response, None
        ttl_ms = int((self.plan.ttl_s + self.plan.stale_s) * 1000)
        # Meanwhile this process serves the entry from memory (its followers, and any
        # request right behind); other replicas wait on the key's lock, which the write
        # releases. A request holding a reservation sends the write in its settle's command
        # (after the answer, as a settle always is: one round trip for both, and no task);
        # else it is stored in the background (it starts once this task next yields).
        self.writing[self.key] = entry
        write = self.store.writer(self.key, entry, ttl_ms, token)
        if write is None or not carry(ctx, Carried(write, functools.partial(self._carried, entry))):
            ctx.app[DRAIN].finish_later(self._put(entry, ttl_ms, token))
        return response, entry

    async def _put(self, entry: Entry, ttl_ms: int, token: str) -> None:
        # Nobody waits on it (this process serves the entry meanwhile): it may travel with
        # the next batch of store commands. The bill does not wait: a client's next request
        # must find its last one settled.
        BACKGROUND.set(True)
        stored = False
        try:
            stored = await self.store.put(self.key, entry, ttl_ms, token)
        finally:
            self._written(entry, stored)

    def _carried(self, entry: Entry, error: BaseException | None) -> None:
        """The outcome of the write the settle carried."""
        self._written(entry, self.store.written(error))

    def _written(self, entry: Entry, stored: bool) -> None:
        if stored:
            self.store.stats.stores += 1
        if self.writing.get(self.key) is entry:
            del self.writing[self.key]

    def _capture(self) -> None:
        """Keep a streamed answer's raw chunks, for assembly once it is complete."""
        ctx = self.ctx
        if ctx.stream and self.kind != "embedding":
            ctx.capture_stream = True
            limit = self.config.max_entry_bytes * CAPTURE_FACTOR
            ctx.stream_filter = CaptureLimit(limit, ctx.stream_filter)

    def client_wants_usage(self) -> bool:
        """Read from the client's own bytes: the gateway may ask the provider for usage itself."""
        if not asks_usage(self.ctx.payload):
            return False
        try:
            original = orjson.loads(self.ctx.body)
        except orjson.JSONDecodeError:
            return False
        return isinstance(original, dict) and asks_usage(original)

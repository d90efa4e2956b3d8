"""Fuzzing the edge: generated bodies and headers (invalid JSON and UTF-8, huge arrays, wrong
types, NUL bytes) never get a 500 or a stack trace, never leave a reservation open, and every
request the gateway accepts is logged exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.accounting import local_periods
from gateway.store.accounting import ACCOUNTING
from tests.conftest import sha
from tests.security.serving import raw_exchange, status_of

Client = TestClient[Any, Any]
KEY = "gk-fuzzed"
PATHS = [
    "/v1/chat/completions",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/models",
    "/v1/files/x",
]
MODELS = ["gpt-4o-mini", "claude-haiku-4-5", "", "gpt-4o*", "a" * 300, "mod\x00el"]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
huge_array = st.integers(min_value=1000, max_value=50_000).map(lambda n: [0] * n)
field_value = st.one_of(json_value, huge_array, st.sampled_from(MODELS))
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": field_value,
        "messages": st.one_of(
            field_value,
            st.lists(
                st.fixed_dictionaries({"role": field_value, "content": field_value}), max_size=3
            ),
        ),
        "stream": field_value,
        "max_tokens": field_value,
        "temperature": field_value,
        "stream_options": field_value,
    },
)


# Mostly well-formed requests with one or two odd fields: these reach the deeper stages.
valid_ish = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5"]),
        "messages": st.just([{"role": "user", "content": "hi"}]),
    },
    optional={
        "stream": field_value,
        "max_tokens": field_value,
        "temperature": field_value,
        "input": field_value,
        "n": field_value,
        "extra": json_value,
    },
)


def _encode(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)


body_bytes = st.one_of(
    valid_ish.map(_encode),
    valid_ish.map(_encode),
    chat_like.map(_encode),
    json_value.map(_encode),
    chat_like.map(_encode).map(lambda b: b[: len(b) // 2]),  # truncated JSON
    st.binary(max_size=200),  # invalid UTF-8, NUL bytes
    st.just(b'{"model": "gpt-4o-mini\x00", "messages": []}'),
    st.just(b'{"model": "\xff\xfe", "messages": []}'),
)
header_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)
header_value = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c not in (0x0A, 0x0D))  # framing stays intact
)
extra_headers = st.one_of(st.just({}), st.dictionaries(header_name, header_value, max_size=5))
content_type = st.sampled_from(
    [b"application/json"] * 4 + [b"text/plain", b"application/json; charset=latin-1", b"", b"\xff"]
)


def _request(
    method: str, path: str, body: bytes, ctype: bytes, extra: dict[str, bytes], request_id: str
) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1".encode(),
        b"Host: gateway",
        f"Authorization: Bearer {KEY}".encode(),
        f"x-request-id: {request_id}".encode(),
        b"Connection: close",
        b"Content-Length: %d" % len(body),
    ]
    if ctype:
        lines.append(b"Content-Type: " + ctype)
    lines += [name.encode() + b": " + value for name, value in extra.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def test_generated_requests_never_get_a_500_leak_a_reservation_or_go_unlogged(
    make_gateway: Callable[..., Awaitable[Client]],
) -> None:
    gateway = await make_gateway(
        keys=[
            {
                "name": "fuzzed",
                "key_sha256": sha(KEY),
                "routes": ["*"],
                "budget": {"usd_per_month": 1000},
                "rate_limit": {"rpm": 100000, "tpm": 100000000},
            }
        ]
    )
    port = gateway.port
    assert port is not None
    loop = asyncio.get_running_loop()
    accepted: list[str] = []

    # Hypothesis drives the examples from a worker thread; each request runs on this loop,
    # where the gateway serves it.
    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(
        method=st.sampled_from(["POST"] * 6 + ["GET", "PUT"]),
        path=st.sampled_from(PATHS),
        body=body_bytes,
        ctype=content_type,
        extra=extra_headers,
    )
    def one(method: str, path: str, body: bytes, ctype: bytes, extra: dict[str, bytes]) -> None:
        request_id = uuid.uuid4().hex
        sent = _request(method, path, body, ctype, extra, request_id)
        answer = asyncio.run_coroutine_threadsafe(raw_exchange(port, sent), loop).result(30)
        assert status_of(answer) < 500 or b'"code":"upstream_failed"' in answer, answer[:300]
        assert b"Traceback" not in answer
        if f"x-request-id: {request_id}".encode() in answer.lower():
            accepted.append(request_id)

    with structlog.testing.capture_logs() as logs:
        await asyncio.to_thread(one)
    logged: dict[str, int] = {}
    for line in logs:
        if line["event"] == "request":
            logged[line["request_id"]] = logged.get(line["request_id"], 0) + 1
        assert line["log_level"] not in ("error", "critical"), line
    assert accepted
    assert all(logged.get(request_id) == 1 for request_id in accepted)
    month = local_periods()[1]
    accounting = gateway.server.app[ACCOUNTING]
    assert await accounting.open_reservations() == 0
    assert await accounting.read([f"held:k:fuzzed:m{month}"]) == [0]

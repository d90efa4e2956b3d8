"""The capture of a streamed miss stays bounded, and the client's own usage request is read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.cache.capture import CaptureLimit, asks_usage


@dataclass
class FakeContext:
    capture_stream: bool = True
    captured: list[bytes] = field(default_factory=list)


def test_capture_is_abandoned_and_freed_once_past_its_limit() -> None:
    ctx = FakeContext()
    seen: list[bytes] = []

    def earlier_filter(ctx: object, chunk: bytes) -> bytes:
        seen.append(chunk)
        return chunk.upper()

    limit = CaptureLimit(10, earlier_filter)
    for chunk in (b"abcd", b"efgh", b"ijkl"):
        ctx.captured.append(chunk)  # the upstream stage captures before the filter runs
        assert limit(ctx, chunk) == chunk.upper()  # type: ignore[arg-type]
    assert not ctx.capture_stream
    assert ctx.captured == []
    assert seen == [b"abcd", b"efgh", b"ijkl"]  # the filter that was there still runs


def test_capture_under_its_limit_is_kept() -> None:
    ctx = FakeContext(captured=[b"abc"])
    assert CaptureLimit(10, None)(ctx, b"abc") == b"abc"  # type: ignore[arg-type]
    assert ctx.capture_stream
    assert ctx.captured == [b"abc"]


def test_usage_is_asked_only_by_include_usage_true() -> None:
    asked: list[Any] = [{"stream_options": {"include_usage": True}}]
    not_asked: list[Any] = [
        {},
        {"stream_options": {"include_usage": False}},
        {"stream_options": None},
        None,
        [1],
    ]
    assert all(asks_usage(p) for p in asked)
    assert not any(asks_usage(p) for p in not_asked)

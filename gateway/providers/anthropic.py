"""Anthropic upstreams: x-api-key auth, anthropic-version, usage from messages and streams."""

from __future__ import annotations

from typing import Any

from gateway.context import Usage
from gateway.providers.base import Provider, StreamUsageReader, as_int

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(Provider):
    kind = "anthropic"
    default_headers = {"anthropic-version": ANTHROPIC_VERSION}

    def auth_headers(self, secret: str | None) -> dict[str, str]:
        return {"x-api-key": secret} if secret else {}

    def url(self, path: str) -> str:
        return self.base_url + path

    def usage_from_body(self, payload: Any) -> Usage | None:
        if not isinstance(payload, dict):
            return None
        return anthropic_usage(payload.get("usage"))

    def stream_usage_reader(self) -> StreamUsageReader:
        return _AnthropicStreamUsage()


class _AnthropicStreamUsage(StreamUsageReader):
    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[str, Any] = {}  # the counts reported so far, by field

    def on_usage_event(self, name: str, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "message_start" and isinstance(obj.get("message"), dict):
            raw = obj["message"].get("usage")
            if isinstance(raw, dict):
                self._counts = dict(raw)
                self.usage = anthropic_usage(raw)
        elif kind == "message_delta":
            raw = obj.get("usage")
            if not isinstance(raw, dict):
                return
            self.final = True  # message_start counts the input; the output is counted here
            # Its counts are cumulative totals, each one sent replacing message_start's: with
            # a server tool (web search), the input grew during the answer. A count it leaves
            # out, or sends as null, stands as message_start reported it.
            counts = raw.items()
            self._counts.update((field, n) for field, n in counts if n is not None)
            self.usage = anthropic_usage(self._counts)


def anthropic_usage(raw: Any) -> Usage | None:
    """Anthropic reports cache reads and writes apart from `input_tokens`; we add them in."""
    if not isinstance(raw, dict):
        return None
    cache_read = as_int(raw.get("cache_read_input_tokens"))
    cache_write = as_int(raw.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=as_int(raw.get("input_tokens")) + cache_read + cache_write,
        output_tokens=as_int(raw.get("output_tokens")),
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
    )

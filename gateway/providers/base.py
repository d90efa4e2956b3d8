"""The provider interface: upstream URL and credentials, usage from answers and streams."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any

import orjson

from gateway.config import ProviderConfig
from gateway.context import Usage
from gateway.sse import SSEParser

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


class StreamUsageReader(ABC):
    """Watches the bytes of a stream as they pass and keeps the usage it reports."""

    def __init__(self) -> None:
        self._parser = SSEParser()
        self.usage: Usage | None = None
        self.final = False  # `usage` is the stream's final report

    def feed(self, chunk: bytes) -> None:
        for name, data in self._parser.feed(chunk, _may_report_usage):
            # Cheap filter: only events with a usage object are parsed (OpenAI puts
            # `"usage":null` on every chunk but the last once usage is asked for).
            if b"usage" in data and _USAGE_OBJECT.search(data):
                try:
                    obj = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    self.on_usage_event(name, obj)

    @abstractmethod
    def on_usage_event(self, name: str, obj: dict[str, Any]) -> None:
        """Update `self.usage` from one parsed event that mentions usage."""


def _may_report_usage(sent: bytes) -> bool:
    """Whether an event among these bytes, as sent, may hold a usage object. Most reads hold
    none: a token or two, each with `"usage":null` on OpenAI once usage is asked for, and
    their events need no parsing. Each `"usage"` of an event's data is one of the bytes sent
    (lines are joined with a line break, which no name holds), and so is what follows it on
    its line."""
    return b"usage" in sent and sent.count(b'"usage"') != sent.count(b'"usage":null')


# Configured headers that say which protocol is spoken, not who pays: not redacted.
_PUBLIC_HEADERS = frozenset({"anthropic-version", "anthropic-beta", "accept", "user-agent"})
# A shorter value ("true", "1") would be replaced wherever it occurs in a body.
_MIN_SECRET_LEN = 8


def _private_values(headers: dict[str, str]) -> list[str]:
    return [
        value
        for name, value in headers.items()
        if name.lower() not in _PUBLIC_HEADERS and len(value) >= _MIN_SECRET_LEN
    ]


class Provider(ABC):
    """One configured upstream. `kind` is also the client dialect it serves."""

    kind: str
    # Headers sent when the client did not send its own value.
    default_headers: dict[str, str] = {}

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.base_url = config.base_url.rstrip("/")
        secret = config.api_key.get_secret_value() if config.api_key else None
        self.headers = {**config.headers, **self.auth_headers(secret)}
        private = [value for value in (secret, *_private_values(config.headers)) if value]
        self._secrets = tuple(dict.fromkeys(value.encode() for value in private))

    def redact(self, body: bytes) -> bytes:
        """SECURITY: a provider that echoes our request (some do in error bodies) must not
        hand the client the provider key, nor another credential the config sends in a header
        of its own (Azure's `api-key`, an organisation or project id)."""
        for secret in self._secrets:
            if secret in body:
                body = body.replace(secret, b"[redacted]")
        return body

    @abstractmethod
    def auth_headers(self, secret: str | None) -> dict[str, str]:
        """Headers that carry the provider key (and any header the provider requires)."""

    @abstractmethod
    def url(self, path: str) -> str:
        """The upstream URL for a client path such as `/v1/chat/completions`."""

    @abstractmethod
    def usage_from_body(self, payload: Any) -> Usage | None:
        """Usage from a buffered JSON answer, or None when it reports none."""

    @abstractmethod
    def stream_usage_reader(self) -> StreamUsageReader:
        """A fresh reader for one stream."""


def as_int(value: Any) -> int:
    """A token count as the provider reported it; 0 for anything that is not one (a negative
    count would refund a budget and could not be counted in the metrics)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

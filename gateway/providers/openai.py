"""OpenAI and OpenAI-compatible upstreams (vLLM, Ollama, Azure-style): bearer auth, usage."""

from __future__ import annotations

from typing import Any

from gateway.context import Usage
from gateway.providers.base import Provider, StreamUsageReader, as_int


class OpenAIProvider(Provider):
    kind = "openai"

    def auth_headers(self, secret: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"} if secret else {}

    def url(self, path: str) -> str:
        # base_url ends with the API version (…/v1), as OpenAI-compatible servers document it.
        return self.base_url + path.removeprefix("/v1")

    def usage_from_body(self, payload: Any) -> Usage | None:
        if not isinstance(payload, dict):
            return None
        return openai_usage(payload.get("usage"))

    def stream_usage_reader(self) -> StreamUsageReader:
        return _OpenAIStreamUsage()


class _OpenAIStreamUsage(StreamUsageReader):
    def on_usage_event(self, name: str, obj: dict[str, Any]) -> None:
        usage = openai_usage(obj.get("usage"))
        response = obj.get("response")
        if usage is None and isinstance(response, dict):  # Responses API: response.completed
            usage = openai_usage(response.get("usage"))
        if usage is not None:  # sent once, in the stream's last chunk (or event)
            self.usage, self.final = usage, True


def openai_usage(raw: Any) -> Usage | None:
    """Chat/completions (`prompt_tokens`…) and Responses (`input_tokens`…) usage shapes."""
    if not isinstance(raw, dict):
        return None
    details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
    return Usage(
        input_tokens=as_int(raw.get("prompt_tokens", raw.get("input_tokens"))),
        output_tokens=as_int(raw.get("completion_tokens", raw.get("output_tokens"))),
        cached_input_tokens=as_int(details.get("cached_tokens"))
        if isinstance(details, dict)
        else 0,
    )

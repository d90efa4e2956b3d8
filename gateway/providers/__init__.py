"""What the upstream speaks: one adapter per provider kind behind one small interface."""

from __future__ import annotations

from gateway.config import ProviderConfig
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Provider, StreamUsageReader
from gateway.providers.openai import OpenAIProvider

__all__ = ["Provider", "StreamUsageReader", "build_provider"]

_KINDS: dict[str, type[Provider]] = {"openai": OpenAIProvider, "anthropic": AnthropicProvider}


def build_provider(name: str, config: ProviderConfig) -> Provider:
    return _KINDS[config.kind](name, config)

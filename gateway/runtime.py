"""The immutable view of one loaded config that requests run against: keys, routes, providers."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config import GatewayConfig, KeyConfig, RouteConfig
from gateway.pricing import PriceTable
from gateway.providers import Provider, build_provider

_GENERATIONS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    config: RouteConfig
    provider: Provider
    path: re.Pattern[str]
    model: re.Pattern[str]

    def matches(self, path: str, model: str) -> bool:
        return bool(self.path.fullmatch(path) and self.model.fullmatch(model))

    def accepts(self, key: str, headers: Mapping[str, str], body_size: int) -> bool:
        """The conditions beyond path and model: key names, header values, body size."""
        match = self.config.match
        if match.keys is not None and key not in match.keys:
            return False
        if match.max_body_bytes is not None and body_size > match.max_body_bytes:
            return False
        return all(headers.get(name) == value for name, value in match.headers.items())


@dataclass(frozen=True, slots=True)
class Runtime:
    """Built once per config load; a request keeps the Runtime it started with."""

    config: GatewayConfig
    keys: tuple[tuple[bytes, KeyConfig], ...]
    routes: tuple[CompiledRoute, ...]
    providers: dict[str, Provider]
    prices: PriceTable
    # Model names that may appear as metric and statistics labels (others become "other").
    known_models: frozenset[str]
    # Derived from this config alone, built on first use: the budgets of (key, route).
    scopes: dict[tuple[str, str], tuple[Any, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    # The route chosen for (dialect, path, model, key name), where nothing else can change
    # the choice (no route matches on headers or body size); bounded, as paths and models
    # come from clients (see gateway.stages.routing).
    chosen: dict[tuple[str, str, str, str], CompiledRoute] = field(
        default_factory=dict, compare=False, repr=False
    )
    # Later loads have larger numbers: state kept across a reload (a circuit breaker) takes
    # its settings from the newest config that used it.
    generation: int = field(default_factory=lambda: next(_GENERATIONS), compare=False)

    @property
    def choice_by_name(self) -> bool:
        """Whether the dialect, path, model and key name alone choose a request's route."""
        return not any(r.config.match.headers or r.config.match.max_body_bytes for r in self.routes)

    @classmethod
    def build(cls, config: GatewayConfig) -> Runtime:
        providers = {name: build_provider(name, p) for name, p in config.providers.items()}
        routes = tuple(
            CompiledRoute(
                config=r,
                provider=providers[r.provider],
                path=_glob(r.match.path),
                model=_glob(r.match.model),
            )
            for r in config.routes
        )
        keys = tuple((bytes.fromhex(k.key_sha256), k) for k in config.keys)
        prices = PriceTable(config.pricing)
        return cls(
            config=config,
            keys=keys,
            routes=routes,
            providers=providers,
            prices=prices,
            known_models=prices.names() | _config_models(config),
        )

    def model_label(self, model: str | None) -> str:
        """A bounded label for a model name: known models as they are, anything else "other"."""
        if not model:
            return "none"
        return model if model in self.known_models else "other"

    def find_key(self, secret: str) -> KeyConfig | None:
        """The key whose sha256 matches `secret`, comparing against every key in constant time."""
        digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        found: KeyConfig | None = None
        for stored, key in self.keys:
            # SECURITY: no early exit, so timing does not tell which stored hash was close.
            if hmac.compare_digest(stored, digest):
                found = key
        return found


def _config_models(config: GatewayConfig) -> frozenset[str]:
    names: set[str] = set()
    for route in config.routes:
        if not any(c in route.match.model for c in "*?["):
            names.add(route.match.model)
        names.update(m for m in [route.model, *(f.model for f in route.fallbacks)] if m)
    return frozenset(names)


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))

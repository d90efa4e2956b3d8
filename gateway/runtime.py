"""The immutable view of one loaded config that requests run against: keys, routes, providers."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from dataclasses import dataclass

from gateway.config import GatewayConfig, KeyConfig, RouteConfig
from gateway.providers import Provider, build_provider


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    config: RouteConfig
    provider: Provider
    path: re.Pattern[str]
    model: re.Pattern[str]

    def matches(self, path: str, model: str) -> bool:
        return bool(self.path.fullmatch(path) and self.model.fullmatch(model))


@dataclass(frozen=True, slots=True)
class Runtime:
    """Built once per config load; a request keeps the Runtime it started with."""

    config: GatewayConfig
    keys: tuple[tuple[bytes, KeyConfig], ...]
    routes: tuple[CompiledRoute, ...]
    providers: dict[str, Provider]

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
        return cls(config=config, keys=keys, routes=routes, providers=providers)

    def find_key(self, secret: str) -> KeyConfig | None:
        """The key whose sha256 matches `secret`, comparing against every key in constant time."""
        digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        found: KeyConfig | None = None
        for stored, key in self.keys:
            # SECURITY: no early exit, so timing does not tell which stored hash was close.
            if hmac.compare_digest(stored, digest):
                found = key
        return found


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))

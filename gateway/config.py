"""The YAML configuration: frozen pydantic models, `${ENV}` expansion, file-naming errors."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from redis.asyncio.connection import parse_url as parse_redis_url
from yarl import URL

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # keys, routes, providers

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class ConfigError(Exception):
    """A configuration problem; the message names the file, the field path and the problem."""


class Frozen(BaseModel):
    """A config section (the gateway's, an eval file's): immutable, no unknown field, and no
    infinite or NaN amount, timeout or price (`.inf` is valid YAML for a float)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


_STORE_SCHEMES = ("memory", "redis", "rediss", "unix", "redis-cluster", "rediss-cluster")


class StorageConfig(Frozen):
    url: str = "memory://"

    @field_validator("url")
    @classmethod
    def _known_store(cls, url: str) -> str:
        """Checked here, not at the first connection. SECURITY: the URL may hold a password,
        so no message repeats it."""
        parts = urlsplit(url)
        if parts.scheme not in _STORE_SCHEMES:
            schemes = ", ".join(f"{s}://" for s in _STORE_SCHEMES)
            raise ValueError(f"the store URL must start with one of {schemes}")
        database = parts.path.strip("/")
        if (
            parts.scheme in ("redis", "rediss")
            and database
            and not (database.isascii() and database.isdigit())
        ):
            # redis-py would take database 0, another application's perhaps, without a word.
            raise ValueError(
                "the database after the address must be a number (redis://host:6379/2)"
            )
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("a unix:// URL needs the socket's path (unix:///run/redis.sock?db=0)")
        if parts.scheme != "memory":
            try:  # as the store will read it: a bad port or option would fail at start-up
                parse_redis_url(url.replace("-cluster://", "://", 1))
            except ValueError as exc:  # (its messages name the option, never its URL)
                raise ValueError(f"the store URL is not valid: {exc}") from None
        return url

    # The store's circuit breaker: after this many consecutive store failures, the store is
    # left alone for `breaker_open_s` (cache: miss; budgets: the outage policy; request log:
    # dropped and counted), then one command probes it.
    breaker_failures: int = Field(3, ge=1)
    breaker_open_s: float = Field(5.0, gt=0)


class ServerConfig(Frozen):
    """Where and how `gateway serve` listens; every field here takes effect at start only."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    # Worker processes on the one port (`--workers` overrides).
    workers: int = Field(1, ge=1, le=256)
    # After SIGTERM: how long requests and streams in flight may take to finish.
    drain_timeout_s: float = Field(30.0, ge=0)
    # SECURITY: slow clients. A new connection must send its first request's headers within
    # header_timeout_s; an idle kept-alive connection (or the headers of its next request)
    # gets keepalive_timeout_s; a request body must arrive within body_timeout_s.
    header_timeout_s: float = Field(10.0, gt=0)
    keepalive_timeout_s: float = Field(75.0, gt=0)
    body_timeout_s: float = Field(60.0, gt=0)
    # SECURITY: the HTTP parser's limits (request line, one header field, header count).
    max_line_bytes: int = Field(8190, ge=256)
    max_header_bytes: int = Field(8190, ge=256)
    max_headers: int = Field(100, ge=8)


class LoggingConfig(Frozen):
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class ProviderConfig(Frozen):
    kind: Literal["openai", "anthropic"]
    base_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+")]
    api_key: SecretStr | None = None
    # Extra headers sent upstream on every request (e.g. OpenAI-Organization).
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _a_url_the_client_reads(cls, url: str) -> str:
        """Read as the HTTP client will read it: a port out of range or a broken IPv6
        address is an error here, not at the first request (or at start-up)."""
        try:
            URL(url)
        except ValueError as exc:
            raise ValueError(f"not a URL the gateway can call: {exc}") from None
        return url


class RetryConfig(Frozen):
    """Retries of one target before the next fallback is tried."""

    attempts: int = Field(3, ge=1, le=10)  # tries per target, the first one included
    base_s: float = Field(0.5, ge=0)  # backoff: full jitter between 0 and base * 2^n …
    max_s: float = Field(8.0, ge=0)  # … capped here
    max_retry_after_s: float = Field(60.0, ge=0)  # a longer provider Retry-After is not slept
    per_try_timeout_s: float | None = Field(None, gt=0)
    ttfb_timeout_s: float | None = Field(None, gt=0)  # streams: first byte of each try


class CircuitConfig(Frozen):
    """Per (provider, model): opens on consecutive failures or on an error rate."""

    failures: int = Field(5, ge=1)
    error_rate: float = Field(0.5, gt=0, le=1)
    window_s: float = Field(30.0, gt=0)
    min_requests: int = Field(20, ge=1)
    cooldown_s: float = Field(30.0, gt=0)


class FallbackTarget(Frozen):
    provider: Name
    model: str | None = None  # None: the model the primary would have used


class CacheConfig(Frozen):
    """Response cache of a route; a route without a `cache` section does not cache."""

    enabled: bool = True
    ttl_s: int = Field(3600, gt=0)
    max_entry_bytes: int = Field(1024 * 1024, gt=0)
    cache_nondeterministic: bool = False  # requests with temperature > 0
    shared_across_keys: bool = False
    stale_s: float = Field(0.0, ge=0)  # serve-stale window past expiry when every target fails


class BudgetConfig(Frozen):
    """Spending caps over UTC calendar periods; at least one must be set."""

    usd_per_day: float | None = Field(None, gt=0)
    usd_per_month: float | None = Field(None, gt=0)
    tokens_per_month: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetConfig:
        if self.usd_per_day is None and self.usd_per_month is None and not self.tokens_per_month:
            raise ValueError("a budget needs usd_per_day, usd_per_month or tokens_per_month")
        return self


class RateLimitConfig(Frozen):
    rpm: int | None = Field(None, gt=0)  # requests per minute
    tpm: int | None = Field(None, gt=0)  # tokens per minute (input estimate + max output)


class PriceConfig(Frozen):
    """USD per 1M tokens."""

    input: float = Field(ge=0)
    output: float = Field(0.0, ge=0)
    cached_input: float | None = Field(None, ge=0)  # default: the input price
    cache_write: float | None = Field(None, ge=0)  # default: the input price


class AccountingConfig(Frozen):
    # A reservation not settled within this time (a crashed process) is charged in full.
    reservation_ttl_s: int = Field(900, ge=1)
    # What a request to a model without a price costs (reserved and billed): never free.
    unpriced_request_usd: float = Field(0.05, gt=0)
    # Keys with a budget when the store is unreachable: refuse (503), or allow per process
    # up to each key's `outage_allowance_usd`.
    budget_on_store_error: Literal["refuse", "allowance"] = "refuse"


class ListenConfig(Frozen):
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)


class AdminConfig(Frozen):
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    # SECURITY: serve the admin API on its own (loopback) address only; it is then 404 on the
    # public port. Takes effect at start only.
    listen: ListenConfig | None = None


class RouteMatch(Frozen):
    """Every condition given must hold. Globs for path and model; exact header values."""

    path: str = "/v1/*"
    model: str = "*"
    keys: list[str] | None = None  # only requests with one of these gateway keys (by name)
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. {x-gateway-tier: cheap}
    max_body_bytes: int | None = Field(None, gt=0)  # only requests at most this large


def _refuse_empty_sections(data: Any, names: tuple[str, ...]) -> Any:
    """A section written with nothing under it (`budget:`, its settings commented out) reads
    as null, which would mean no section at all: no budget, no rate limit, no cache, with
    nothing to say so. It is refused (`cache: {}` asks for the cache's defaults)."""
    if isinstance(data, dict):
        for name in names:
            if name in data and data[name] is None:
                defaults = " (cache: {} for its defaults)" if name == "cache" else ""
                raise ValueError(f"'{name}' is empty: give it its settings{defaults}, or remove it")
    return data


class RouteConfig(Frozen):
    name: Name
    match: RouteMatch = RouteMatch()
    provider: Name
    model: str | None = None
    # Deadline for a whole buffered answer, or for the first byte of a stream.
    timeout_s: float = Field(300.0, gt=0)
    # Longest silence allowed between two chunks of a stream.
    idle_timeout_s: float = Field(120.0, gt=0)
    retry: RetryConfig = RetryConfig()
    fallbacks: list[FallbackTarget] = Field(default_factory=list)
    circuit: CircuitConfig = CircuitConfig()
    hedge_after_s: float | None = Field(None, gt=0)
    json_repair: Literal["off", "retry"] = "off"
    cache: CacheConfig | None = None
    # Caps the spend of every key on this route together.
    budget: BudgetConfig | None = None
    # Output tokens reserved when a request sets no max_tokens.
    default_max_output_tokens: int = Field(4096, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        return _refuse_empty_sections(data, ("cache", "budget"))


class KeyConfig(Frozen):
    name: Name
    key_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    routes: list[str] = Field(min_length=1)
    budget: BudgetConfig | None = None
    # Budgets of this key on one route: {route name: budget}.
    route_budgets: dict[str, BudgetConfig] = Field(default_factory=dict)
    rate_limit: RateLimitConfig | None = None
    # POSTed a small JSON notice when a budget crosses 50%, 80% and 100%.
    webhook_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    outage_allowance_usd: float = Field(0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        return _refuse_empty_sections(data, ("budget", "rate_limit"))


class GatewayConfig(Frozen):
    storage: StorageConfig = StorageConfig()
    server: ServerConfig = ServerConfig()
    logging: LoggingConfig = LoggingConfig()
    providers: dict[Name, ProviderConfig] = Field(min_length=1)
    routes: list[RouteConfig] = Field(min_length=1)
    keys: list[KeyConfig] = Field(default_factory=list)
    pricing: dict[str, PriceConfig] = Field(default_factory=dict)
    accounting: AccountingConfig = AccountingConfig()
    admin: AdminConfig | None = None

    @model_validator(mode="after")
    def _references_resolve(self) -> GatewayConfig:
        _unique("routes", [r.name for r in self.routes])
        _unique("keys", [k.name for k in self.keys])
        _unique("keys", [k.key_sha256 for k in self.keys], what="key_sha256")
        route_names = {r.name for r in self.routes}
        key_names = {k.name for k in self.keys}
        known = ", ".join(sorted(self.providers))
        for i, route in enumerate(self.routes):
            # A misspelt key name would make the route match no request, silently.
            unknown = [k for k in route.match.keys or () if k not in key_names]
            if unknown:
                raise ValueError(f"routes[{i}].match.keys: unknown key {unknown[0]!r}")
            targets = [("provider", route.provider)] + [
                (f"fallbacks[{j}].provider", f.provider) for j, f in enumerate(route.fallbacks)
            ]
            for where, name in targets:
                if name not in self.providers:
                    raise ValueError(
                        f"routes[{i}].{where}: unknown provider {name!r} (known: {known})"
                    )
        for i, key in enumerate(self.keys):
            unknown = [r for r in key.routes if r != "*" and r not in route_names]
            if unknown:
                raise ValueError(f"keys[{i}].routes: unknown route {unknown[0]!r}")
            unknown = [r for r in key.route_budgets if r not in route_names]
            if unknown:
                raise ValueError(f"keys[{i}].route_budgets: unknown route {unknown[0]!r}")
            if self.admin is not None and key.key_sha256 == self.admin.token_sha256:
                # SECURITY: one secret would both spend and run the admin API (read every
                # key's spend, reload the config): the admin token is a secret of its own.
                raise ValueError(
                    f"admin.token_sha256: the admin token is also the gateway key of "
                    f"keys[{i}] ({key.name!r}); give the admin API a token of its own"
                )
        return self


def _unique(section: str, values: list[str], what: str = "name") -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{section}[{i}].{what}: duplicate {what} {value!r}")
        seen.add(value)


def expand_env(node: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a parsed YAML tree."""
    if isinstance(node, dict):
        return {k: expand_env(v, env, _join(path, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, env, f"{path}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _ENV_REF.sub(substitute, node)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")


def parse_config(data: Any, source: str, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate an already parsed YAML tree; errors name `source` and the field path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    try:
        expanded = expand_env(data, os.environ if env is None else env)
        return GatewayConfig.model_validate(expanded)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read") from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = _location(tuple(err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {msg}" if where else msg)
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate a YAML config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _refuse_keys_written_twice(node, (), str(path), set())
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read") from None
    return parse_config(data, str(path), env)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without the lines of the file PyYAML quotes around it: they
    may hold a secret (a provider key written in the file), and this goes to logs and to an
    admin's reload answer."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc)  # a character the reader refuses: its code and position only
    parts = [
        f"{text} (line {mark.line + 1}, column {mark.column + 1})" if mark else text
        for text, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark))
        if text
    ]
    return "; ".join(parts) or "unreadable"


def _refuse_keys_written_twice(
    node: yaml.Node, loc: tuple[int | str, ...], source: str, walked: set[int]
) -> None:
    """YAML lets a mapping name a key twice, the last one silently winning: a budget written
    twice would lose its first limits without a word. Here it is an error, naming the field.
    (A key brought in by a merge, `<<: *defaults`, may still be set again.) A node an alias
    repeats is looked at once."""
    if id(node) in walked:
        return
    walked.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_keys_written_twice(item, (*loc, index), source, walked)
    elif isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], yaml.Node] = {}
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge" or not isinstance(key, yaml.ScalarNode):
                continue  # a key that is a list or a mapping: refused as unhashable on reading
            first = seen.setdefault((key.tag, key.value), key)
            if first is not key:
                where = _location(loc)
                raise ConfigError(
                    f"{source}: {where + ': ' if where else ''}the key {key.value!r} is written "
                    f"twice (lines {first.start_mark.line + 1} and {key.start_mark.line + 1})"
                )
            _refuse_keys_written_twice(value, (*loc, key.value), source, walked)

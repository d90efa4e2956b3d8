"""The processes of one run (mock provider, bare forwarder, gateway) and the gateway's config."""

from __future__ import annotations

import hashlib
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from gateway.bench import wrk
from gateway.bench.plan import Target
from gateway.bench.procs import BenchError, Cpus, Proc

PATH = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
# Every request: a short system prompt and a unique (or fixed) user question, temperature 0
# so the gateway's cache may store it; the mock answers with the fixed REPLY.
BODY_PREFIX = (
    '{"model":"' + MODEL + '","temperature":0,"max_tokens":64,"messages":['
    '{"role":"system","content":"You are a terse assistant."},'
    '{"role":"user","content":"Request '
)
BODY_SUFFIX = (
    ": in one sentence, why should a proxy in front of a language model add as little "
    'latency as it can, and what should it do instead of waiting?"}]}'
)
REPLY = (
    "A proxy should stay out of the way: pass bytes through, keep connections warm, and "
    "spend its time on budgets and caching only where that saves more than it costs."
)


def chat_load(
    wrk_bin: str, url: str, auth: str, *, latency_ms: int, fixed: bool, conns: int, seconds: float
) -> list[str]:
    """wrk's command line for the benchmark's chat requests to `url`: a unique prompt each
    time, or (`fixed`) one prompt, which a gateway answers from its cache."""
    args = [PATH, auth, str(latency_ms), "0" if fixed else "1", BODY_PREFIX, BODY_SUFFIX, REPLY]
    return wrk.wrk_argv(
        wrk_bin,
        url,
        connections=conns,
        duration_s=seconds,
        script=wrk.script_path(),
        script_args=args,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def gateway_config(mock_url: str, mock_key: str, key_sha256: str, redis_url: str) -> dict[str, Any]:
    """The full pipeline on: key auth, rate limit and budget in the store, cache, metrics, log.

    The limits are far above what a run sends, so every request is checked and none refused.
    """
    return {
        "storage": {"url": redis_url},
        "logging": {"format": "json", "level": "info"},
        "providers": {
            "openai": {"kind": "openai", "base_url": f"{mock_url}/v1", "api_key": mock_key}
        },
        "routes": [
            {
                "name": "chat",
                "match": {"path": PATH},
                "provider": "openai",
                # Short: unique prompts of a long run would otherwise fill the store.
                "cache": {"ttl_s": 120},
            }
        ],
        "keys": [
            {
                "name": "bench",
                "key_sha256": key_sha256,
                "routes": ["*"],
                "budget": {"usd_per_day": 1_000_000, "usd_per_month": 10_000_000},
                "rate_limit": {"rpm": 1_000_000_000, "tpm": 1_000_000_000_000},
            }
        ],
    }


@dataclass(slots=True)
class Stack:
    """Ports, keys and processes of one run."""

    workdir: Path
    cpus: Cpus
    redis_url: str
    mock_key: str = field(default_factory=lambda: "mock-" + secrets.token_hex(8))
    gateway_key: str = field(default_factory=lambda: "gk-bench-" + secrets.token_hex(16))
    mock_port: int = field(default_factory=free_port)
    forwarder_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def mock_url(self) -> str:
        return f"http://127.0.0.1:{self.mock_port}"

    def url(self, target: str) -> str:
        if target == "direct":
            return self.mock_url
        port = self.forwarder_port if target == "forwarder" else self.gateway_port
        return f"http://127.0.0.1:{port}"

    def auth(self, target: str) -> str:
        """Direct calls carry the provider key; the gateway's callers their gateway key."""
        if target == "direct":
            return f"Bearer {self.mock_key}"
        if target == "forwarder":
            return "Bearer unused"  # the forwarder sets the provider key itself
        return f"Bearer {self.gateway_key}"

    def config_path(self) -> Path:
        sha = hashlib.sha256(self.gateway_key.encode()).hexdigest()
        config = gateway_config(self.mock_url, self.mock_key, sha, self.redis_url)
        path = self.workdir / "gateway.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self) -> None:
        self.start_mock()
        py = sys.executable
        self._start(
            "forwarder",
            [
                py,
                "-m",
                "gateway.bench.forwarder",
                "--port",
                str(self.forwarder_port),
                "--upstream",
                self.mock_url,
                "--api-key",
                self.mock_key,
            ],
            self.cpus.proxy,
            f"{self.url('forwarder')}/healthz",
        )
        self.start_gateway("gateway", [], self.cpus.proxy)

    def start_mock(self) -> None:
        argv = [sys.executable, "-m", "gateway.cli", "mock-provider", "--port", str(self.mock_port)]
        self._start("mock", [*argv, "--api-key", self.mock_key], self.cpus.load, self.mock_url)

    def start_gateway(self, name: str, extra: list[str], cpus: frozenset[int] | None) -> Proc:
        argv = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config_path())]
        argv += ["--host", "127.0.0.1", "--port", str(self.gateway_port), *extra]
        return self._start(name, argv, cpus, f"{self.url('gateway')}/healthz")

    def _start(self, name: str, argv: list[str], cpus: frozenset[int] | None, ready: str) -> Proc:
        proc = Proc(name, argv, cpus, self.workdir / f"{name}.log")
        self.procs[name] = proc
        proc.start()
        proc.wait_ready(ready)
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            proc.stop()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def post(self, target: Target | str, unique: str | None = None) -> tuple[int, str]:
        """One request as wrk sends it: (status, x-gateway-cache header or "")."""
        body = BODY_PREFIX + (unique or "same") + BODY_SUFFIX
        request = urllib.request.Request(  # noqa: S310 - a loopback URL
            self.url(target) + PATH,
            data=body.encode(),
            headers={
                "Authorization": self.auth(target),
                "Content-Type": "application/json",
                "x-mock-reply": REPLY,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                orjson.loads(answer.read())
                return answer.status, answer.headers.get("x-gateway-cache", "")
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("x-gateway-cache", "")

    def smoke(self) -> None:
        """Every target answers 200; the gateway misses, then hits, on a fixed prompt."""
        for target in ("direct", "forwarder", "gateway"):
            status, _ = self.post(target, unique=secrets.token_hex(8))
            if status != 200:
                raise BenchError(f"{target} answered {status}: see {self.workdir}")
        self.prime_hit()

    def prime_hit(self) -> None:
        self.post("gateway")
        status, cache = self.post("gateway")
        if status != 200 or cache != "HIT":
            raise BenchError(
                f"the gateway did not answer a repeated prompt from its cache ({cache})"
            )


def help_mentions(flag: str) -> bool:
    """Whether `gateway serve --help` offers `flag` (e.g. --workers, added separately)."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    return flag in out.stdout

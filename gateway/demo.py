"""`gateway demo`: the mock provider and a gateway on the embedded store, ready to try."""

from __future__ import annotations

import asyncio
import secrets
import signal
from typing import Any

from aiohttp import web

from gateway.app import create_app
from gateway.config import GatewayConfig, LoggingConfig, parse_config
from gateway.logs import configure_logging
from gateway.mock import create_mock_app
from gateway.serve import new_event_loop, new_key, runner_for
from gateway.sites import start_sites


def demo_config(
    listen: tuple[str, int], mock_url: str, key_sha256: str, provider_key: str, admin_sha256: str
) -> GatewayConfig:
    host, port = listen
    data: dict[str, Any] = {
        "server": {"host": host, "port": port},
        "storage": {"url": "memory://"},
        "logging": {"format": "console"},
        "providers": {
            "openai": {"kind": "openai", "base_url": f"{mock_url}/v1", "api_key": provider_key},
            "anthropic": {"kind": "anthropic", "base_url": mock_url, "api_key": provider_key},
        },
        "routes": [
            {
                "name": "chat",
                "match": {"path": "/v1/*", "model": "gpt-*"},
                "provider": "openai",
                "cache": {"ttl_s": 3600},  # temperature 0 requests are answered from the cache
            },
            {"name": "embeddings", "match": {"path": "/v1/embeddings"}, "provider": "openai"},
            {"name": "models", "match": {"path": "/v1/models*"}, "provider": "openai"},
            # The Anthropic SDK's models.list(): the same path, its own provider's list.
            {"name": "claude-models", "match": {"path": "/v1/models*"}, "provider": "anthropic"},
            {
                "name": "claude",
                "match": {"model": "claude-*"},
                "provider": "anthropic",
                "cache": {"ttl_s": 3600},
            },
        ],
        "keys": [
            {
                "name": "demo",
                "key_sha256": key_sha256,
                "routes": ["*"],
                "budget": {"usd_per_month": 10},
                "rate_limit": {"rpm": 600},
            }
        ],
        "admin": {"token_sha256": admin_sha256},
    }
    return parse_config(data, "<demo>")


def banner(url: str, key: str, admin_token: str) -> str:
    return f"""
llm-gateway demo: a gateway on {url}, in front of the bundled mock provider.

  gateway key:  {key}   (budget $10/month, 600 requests/minute)
  admin token:  {admin_token}   ({url}/admin/stats, {url}/admin/keys)
  export GATEWAY_API_KEY={key}

  curl {url}/v1/chat/completions \\
    -H "Authorization: Bearer $GATEWAY_API_KEY" -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  python3 -c 'from openai import OpenAI; import os
c = OpenAI(base_url="{url}/v1", api_key=os.environ["GATEWAY_API_KEY"])
print(c.chat.completions.create(model="gpt-4o-mini",
      messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)'

Press Ctrl-C to stop.
"""


async def run_demo(host: str, port: int, mock_port: int) -> None:
    provider_key = "mock-" + secrets.token_urlsafe(16)
    mock = runner_for(create_mock_app(api_key=provider_key))
    await mock.setup()
    try:
        await web.TCPSite(mock, host, mock_port).start()
        key, key_sha256 = new_key()
        admin_token, admin_sha256 = new_key()
        mock_url = f"http://{host}:{mock_port}"
        config = demo_config((host, port), mock_url, key_sha256, provider_key, admin_sha256)
        configure_logging(LoggingConfig(format="console"))
        # Served as `gateway serve` serves: the same runner (parser limits, header deadline,
        # JSON refusals) and sites.
        gateway = runner_for(create_app(config), config.server)
        await gateway.setup()
        try:
            await start_sites(gateway, config)
            print(banner(f"http://{host}:{port}", key, admin_token), flush=True)
            await _interrupted()
        finally:
            await gateway.cleanup()
    finally:
        await mock.cleanup()


async def _interrupted() -> None:
    """Until Ctrl-C or SIGTERM. A signal handler on the loop, not KeyboardInterrupt: raised
    inside a transport callback, uvloop reports that and carries on serving."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def demo(host: str, port: int, mock_port: int) -> None:
    loop = new_event_loop()
    try:
        loop.run_until_complete(run_demo(host, port, mock_port))
    finally:
        loop.close()

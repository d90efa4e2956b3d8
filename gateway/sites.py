"""Where the gateway listens: the public site, an optional admin site, and what each serves."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web
from yarl import URL

from gateway.config import ConfigError, GatewayConfig

BACKLOG = 1024
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})  # noqa: S104 - names, not a bind
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

Address = tuple[str, int]


@dataclass(slots=True)
class Sites:
    """With a separate admin address, admin routes answer only there, and nothing else does."""

    separate_admin: bool
    admin_ports: set[int] = field(default_factory=set)

    def serves(self, request: web.Request) -> bool:
        if not self.separate_admin:
            return True
        admin_path = request.path == "/admin" or request.path.startswith("/admin/")
        return admin_path == (_local_port(request) in self.admin_ports)


SITES = web.AppKey("sites", Sites)


def _local_port(request: web.Request) -> int | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return int(sockname[1]) if isinstance(sockname, tuple) and len(sockname) >= 2 else None


def listen_addresses(config: GatewayConfig) -> list[Address]:
    """The public address, then the admin one if it has its own."""
    found = [(config.server.host, config.server.port)]
    admin = config.admin.listen if config.admin is not None else None
    if admin is not None:
        found.append((admin.host, admin.port))
    return found


def check_listen(config: GatewayConfig, source: str) -> None:
    """Refuse a config whose admin address shares the public port, whose provider URL
    points back at this gateway (every request would loop through it until it timed out), or
    whose workers would each keep their own embedded store."""
    _check_shared_store(config, source)
    admin = config.admin.listen if config.admin is not None else None
    if admin is not None and admin.port == config.server.port:
        raise ConfigError(
            f"{source}: admin.listen.port: {admin.port} is also the public port; "
            "the admin API needs a port of its own"
        )
    for name, provider in config.providers.items():
        url = URL(provider.base_url)
        for host, port in listen_addresses(config):
            if url.port == port and _same_host(url.host or "", host):
                raise ConfigError(
                    f"{source}: providers.{name}.base_url: {provider.base_url} points at this "
                    f"gateway itself (it listens on {host}:{port}); requests would loop"
                )


def _check_shared_store(config: GatewayConfig, source: str) -> None:
    """`memory://` lives in one process: with several workers each would hold its own
    budgets and rate limits (every limit multiplied by the workers), cache and request log,
    and the admin views would show whichever worker answered."""
    workers = config.server.workers
    if workers > 1 and config.storage.url.startswith("memory://"):
        raise ConfigError(
            f"{source}: server.workers: {workers} workers (or --workers {workers}) need a "
            "store they share, and storage.url memory:// is each process's own: their "
            "budgets and rate limits would each count apart. Set storage.url to a Redis "
            "(redis://host:6379/0), or run one worker"
        )


def _normal(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _is_local(host: str) -> bool:
    """Loopback names and addresses (127.0.0.0/8, ::1, v4-mapped loopback), and "any"."""
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or ip.is_unspecified or bool(mapped and mapped.is_loopback)


def _same_host(provider_host: str, listen_host: str) -> bool:
    """Whether a provider host can reach a socket bound to `listen_host`. Names are not
    resolved (no DNS at load); a wildcard bind is reachable through every local name."""
    target, bound = _normal(provider_host), _normal(listen_host)
    if target == bound:
        return True
    if bound in _WILDCARDS:
        return _is_local(target) or target == socket.gethostname().lower()
    return _is_local(bound) and _is_local(target)


async def start_sites(
    runner: web.AppRunner,
    config: GatewayConfig,
    *,
    reuse_port: bool = False,
) -> list[web.TCPSite]:
    """The admin site first (its ports are recorded before anything is served), then the
    public one. `reuse_port`: several worker processes share the port (SO_REUSEPORT)."""
    sites: list[web.TCPSite] = []
    admin = config.admin.listen if config.admin is not None else None
    state = runner.app[SITES]
    if admin is not None:
        site = web.TCPSite(runner, admin.host, admin.port, reuse_port=reuse_port or None)
        await site.start()
        sites.append(site)
        state.admin_ports.update(_ports(runner.addresses))
    server = config.server
    public = web.TCPSite(
        runner, server.host, server.port, backlog=BACKLOG, reuse_port=reuse_port or None
    )
    await public.start()
    sites.append(public)
    return sites


def check_free(host: str, port: int) -> None:
    """Raise OSError when something listens on `host:port` already. Workers bind with
    SO_REUSEPORT, which also lets them join a port that another group of workers (of the same
    user) serves: the kernel would then split the connections between the two gateways,
    silently. A bind without it fails in that case, as a single process's bind does."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio binds
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)


def _ports(addresses: Sequence[object]) -> set[int]:
    return {int(a[1]) for a in addresses if isinstance(a, tuple) and len(a) >= 2}

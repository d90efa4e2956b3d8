"""The Dockerfile, checked without a container engine: pinned bases, sources that exist, a
non-root user, and a HEALTHCHECK through a `gateway` subcommand that works."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.cli import main
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
UID = 10001


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            out.append([])
        out[-1].append((keyword, rest))
    return out


def _exec_form(rest: str) -> list[str]:
    words = json.loads(rest)
    assert isinstance(words, list), rest
    return [str(w) for w in words]


def test_build_has_several_stages_on_a_slim_base_pinned_to_a_version() -> None:
    names: set[str] = set()
    bases = []
    for stage in stages():
        image, _, alias = stage[0][1].partition(" AS ")
        bases.append(image)
        if alias:
            names.add(alias.strip())
    assert len(bases) >= 2
    for image in bases:
        repository, _, tag = image.partition(":")
        assert repository == "python", image
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+", tag), image  # never `latest`
    assert names  # the final stage copies from a named build stage


def test_every_copy_source_exists_in_the_repository() -> None:
    for keyword, rest in instructions():
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _ = rest.split()
        for source in sources:
            assert (ROOT / source).exists(), source


def test_final_stage_runs_as_the_non_root_uid_the_deployment_expects() -> None:
    final = stages()[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users == [f"{UID}:{UID}"]
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert f"--uid {UID}" in runs
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == UID


def test_command_and_healthcheck_use_the_packaged_gateway_entry_point() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gateway"] == "gateway.cli:main"
    final = dict(stages()[-1])
    command = _exec_form(final["CMD"])
    assert command[:2] == ["gateway", "serve"]
    health = final["HEALTHCHECK"]
    probe = _exec_form(health[health.index("CMD") + len("CMD") :].strip())
    assert probe[:2] == ["gateway", "healthcheck"]
    assert probe[probe.index("--url") + 1] == "http://127.0.0.1:8080/readyz"
    assert final["EXPOSE"] == "8080"


def test_config_is_read_from_the_directory_the_deployments_mount() -> None:
    command = _exec_form(dict(stages()[-1])["CMD"])
    config = Path(command[command.index("--config") + 1])
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    mounts = [Path(m["mountPath"]) for m in container["volumeMounts"]]
    assert config.parent in mounts
    assert not any("config" in rest for k, rest in instructions() if k == "COPY")  # not baked in


async def _healthcheck(url: str) -> int:
    return await asyncio.to_thread(main, ["healthcheck", "--url", url, "--timeout", "2"])


async def test_healthcheck_subcommand_exits_0_on_200_and_1_otherwise(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    status = {"code": 200}

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({}, status=status["code"])

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    server = await aiohttp_server(app)
    url = str(server.make_url("/readyz"))
    assert await _healthcheck(url) == 0
    status["code"] = 503
    assert await _healthcheck(url) == 1
    assert await _healthcheck(f"http://127.0.0.1:{free_port()}/readyz") == 1
    assert await _healthcheck("file:///etc/passwd") == 1

"""Gateway keys: only their sha256 is configured or kept, every comparison takes the same time,
and a key removed from the config is refused on its next request once the config reloads."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import runtime as runtime_module
from gateway.app import create_app
from gateway.config import ConfigError, load_config, parse_config
from gateway.reload import CONFIG_SOURCE, ConfigSource
from gateway.runtime import Runtime
from tests.conftest import KEY_A, KEY_B, base_config, sha
from tests.processes import write_config

Client = TestClient[Any, Any]
ADMIN = "admin-token-keys"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_a_key_written_in_plain_text_in_the_config_is_refused(mock_url: str) -> None:
    data = base_config(mock_url)
    data["keys"][0]["key"] = KEY_A
    with pytest.raises(ConfigError, match=r"keys\[0\]\.key: Extra inputs are not permitted"):
        parse_config(data, "<test>")


def test_an_admin_token_that_is_also_a_gateway_key_is_refused(mock_url: str) -> None:
    """Else the one secret would spend as team-b and run the admin API too."""
    data = base_config(mock_url, admin={"token_sha256": sha(KEY_B)})
    with pytest.raises(ConfigError) as refused:
        parse_config(data, "<test>")
    message = str(refused.value)
    assert message.startswith("<test>: admin.token_sha256: the admin token is also")
    assert "keys[1] ('team-b')" in message
    assert sha(KEY_B) not in message


def test_runtime_keeps_only_the_digest_of_each_key(mock_url: str) -> None:
    runtime = Runtime.build(parse_config(base_config(mock_url), "<test>"))
    assert KEY_A.encode() not in repr(runtime).encode()
    assert [digest.hex() for digest, _ in runtime.keys] == [sha(KEY_A), sha(KEY_B)]


@pytest.mark.parametrize("presented", [KEY_A, KEY_B, "gk-unknown", ""])
def test_every_stored_key_is_compared_in_constant_time_whatever_is_presented(
    mock_url: str, presented: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = Runtime.build(parse_config(base_config(mock_url), "<test>"))
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(runtime_module.hmac, "compare_digest", counting)
    runtime.find_key(presented)
    assert len(calls) == len(runtime.keys)  # no early exit on a match or a mismatch


async def test_key_removed_from_the_config_gets_401_on_its_next_request_after_reload(
    tmp_path: Path, mock_url: str, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    data = base_config(mock_url, admin={"token_sha256": sha(ADMIN)})
    path = write_config(tmp_path, data)
    app = create_app(load_config(path))
    app[CONFIG_SOURCE] = ConfigSource(str(path))
    client = await aiohttp_client(app)
    revoked = {"Authorization": f"Bearer {KEY_B}"}
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=revoked)).status == 200

    data["keys"] = [k for k in data["keys"] if k["name"] != "team-b"]
    write_config(tmp_path, data)
    reload = await client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    assert reload.status == 200

    refused = await client.post("/v1/chat/completions", json=CHAT, headers=revoked)
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "invalid_api_key"
    kept = {"Authorization": f"Bearer {KEY_A}"}
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=kept)).status == 200

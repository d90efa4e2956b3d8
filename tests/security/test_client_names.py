"""Names a client chooses: a model name cannot make the gateway keep or write more than a
model's name."""

from __future__ import annotations

from typing import Any

import pytest
import structlog.testing
from aiohttp.test_utils import TestClient

from gateway.mock import MockState
from gateway.stages.body import MAX_MODEL_CHARS
from gateway.stages.limits import UNPRICED_SEEN
from tests.conftest import KEY_A

Client = TestClient[Any, Any]
MESSAGES = [{"role": "user", "content": "hi"}]
# Both match a route (gpt-4o*, claude-*) and have no price: each would be remembered.
DIALECTS = [
    ("/v1/chat/completions", "gpt-4o-", {"Authorization": f"Bearer {KEY_A}"}),
    ("/v1/messages", "claude-", {"x-api-key": KEY_A}),
]


@pytest.mark.parametrize(("path", "prefix", "headers"), DIALECTS)
async def test_a_model_name_longer_than_any_model_is_400_and_kept_nowhere(
    gateway: Client, mock: MockState, path: str, prefix: str, headers: dict[str, str]
) -> None:
    name = prefix + "x" * 100_000
    body = {"model": name, "max_tokens": 5, "messages": MESSAGES}
    with structlog.testing.capture_logs() as logs:
        resp = await gateway.post(path, json=body, headers=headers)
        text = await resp.text()
    assert resp.status == 400
    assert "longer than 256 characters" in text
    assert "x" * 300 not in text
    assert mock.requests == []
    assert [e["status"] for e in logs if e["event"] == "request"] == [400]
    assert "x" * 300 not in repr(logs)  # the log line, and no unpriced-model warning
    assert gateway.server.app[UNPRICED_SEEN] == set()


@pytest.mark.parametrize(("path", "prefix", "headers"), DIALECTS)
async def test_a_model_name_of_the_longest_accepted_length_is_served(
    gateway: Client, mock: MockState, path: str, prefix: str, headers: dict[str, str]
) -> None:
    name = prefix + "x" * (MAX_MODEL_CHARS - len(prefix))
    body = {"model": name, "max_tokens": 5, "messages": MESSAGES}
    resp = await gateway.post(path, json=body, headers=headers)
    assert resp.status == 200
    assert [r.json()["model"] for r in mock.requests] == [name]

"""The log's output lost (its reader gone: a broken pipe): lines are lost, answers are not."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from tests.conftest import KEY_A, base_config
from tests.processes import GatewayProcess, free_port, write_config

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_answers_and_provider_errors_pass_when_the_log_cannot_be_written(
    tmp_path: Path, mock_url: str
) -> None:
    """A provider's error is logged as a warning on its way back: writing that line failed
    with the log's reader gone, and the client got a 500 in place of the provider's error."""
    reader, writer = os.pipe()
    path = write_config(tmp_path, base_config(mock_url))
    gateway = GatewayProcess(path, free_port(), Path(f"/dev/fd/{writer}"))
    os.close(writer)  # the gateway holds its own
    try:
        await gateway.ready()
        os.close(reader)  # from now on, every write to the log fails (EPIPE)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY_A}"}) as s:
            for status in (200, 503, 400, 200):
                headers = {"x-mock-status": str(status)} if status != 200 else {}
                async with s.post(
                    f"{gateway.url}/v1/chat/completions", json=CHAT, headers=headers
                ) as resp:
                    body = await resp.json()
                    assert resp.status == status, body
                    assert status == 200 or "internal_error" not in str(body)
    finally:
        gateway.stop()

"""The official openai SDK, pointed at a running gateway, works as against the provider."""

from __future__ import annotations

import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import KEY_B, Stack


def _client(stack: Stack, key: str | None = None, **kwargs: object) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=key or stack.key, **kwargs)  # type: ignore[arg-type]


async def test_chat_completion(gateway_stack: Stack) -> None:
    async with _client(gateway_stack) as client:
        answer = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
        )
    assert answer.choices[0].message.content == "Mock answer: Hello"
    assert answer.usage is not None
    assert answer.usage.completion_tokens > 0


async def test_chat_completion_stream(gateway_stack: Stack) -> None:
    async with _client(gateway_stack) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Stream me"}],
            stream=True,
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert len(parts) > 2
    assert "".join(parts) == "Mock answer: Stream me"


async def test_embeddings_default_base64(gateway_stack: Stack) -> None:
    async with _client(gateway_stack) as client:
        result = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 16


async def test_legacy_completion_and_responses_api(gateway_stack: Stack) -> None:
    async with _client(gateway_stack) as client:
        completion = await client.completions.create(model="gpt-4o-mini", prompt="Say hi")
        response = await client.responses.create(model="gpt-4o-mini", input="Hi there")
    assert completion.choices[0].text == "Mock answer: Say hi"
    assert response.output_text == "Mock answer: Hi there"


async def test_models_list(gateway_stack: Stack) -> None:
    async with _client(gateway_stack) as client:
        models = [m.id async for m in client.models.list()]
    assert "gpt-4o-mini" in models


async def test_unknown_key_raises_authentication_error(gateway_stack: Stack) -> None:
    async with _client(gateway_stack, key="gk-not-a-key") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="gpt-4o-mini", messages=[])


async def test_route_not_allowed_raises_permission_denied(gateway_stack: Stack) -> None:
    async with _client(gateway_stack, key=KEY_B) as client:
        with pytest.raises(openai.PermissionDeniedError):
            await client.embeddings.create(model="text-embedding-3-small", input="x")


async def test_unknown_model_on_messages_path_raises_not_found(gateway_stack: Stack) -> None:
    async with _client(gateway_stack) as client:
        with pytest.raises(openai.NotFoundError):
            await client.post("/files/abc", cast_to=object)


async def test_upstream_override_field_raises_bad_request(gateway_stack: Stack) -> None:
    async with _client(gateway_stack) as client:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[], extra_body={"api_base": "http://x"}
            )


async def test_batch_create_reaches_the_provider_with_its_endpoint_field(
    gateway_stack: Stack,
) -> None:
    """A batch's `endpoint` is the API path of its requests, not an upstream: it is sent on
    (the mock has no batches API, so its own 404 comes back); elsewhere it is refused."""
    async with _client(gateway_stack, max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.batches.create(
                input_file_id="file-abc",
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
        assert info.value.code == "unknown_url"  # the provider's answer
        (sent,) = gateway_stack.mock.requests
        assert (sent.path, sent.json()["endpoint"]) == ("/v1/batches", "/v1/chat/completions")
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[], extra_body={"endpoint": "http://x"}
            )
        assert refused.value.code == "upstream_override_refused"


async def test_body_over_limit_raises_413_status_error(gateway_stack: Stack) -> None:
    async with _client(gateway_stack, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "x" * (11 * 1024 * 1024)}],
            )
    assert info.value.status_code == 413


async def test_provider_rate_limit_raises_rate_limit_error(gateway_stack: Stack) -> None:
    async with _client(gateway_stack, max_retries=0) as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[], extra_headers={"x-mock-status": "429"}
            )

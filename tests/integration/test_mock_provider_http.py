"""The mock provider over HTTP: endpoint shapes, stream framing, scripts, faults, keys, and
the official SDKs parsing its answers."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.mock import MOCK_STATE, MockState, ScriptStep, create_mock_app

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
KEY = "sk-mock-test-key"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}
MESSAGE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hello"}],
}


@pytest.fixture
def app() -> web.Application:
    return create_mock_app()


@pytest.fixture
async def provider(aiohttp_client: MakeClient, app: web.Application) -> Client:
    return await aiohttp_client(app)


@pytest.fixture
def state(app: web.Application) -> MockState:
    return app[MOCK_STATE]


def data_events(text: str) -> list[Any]:
    """The JSON of each `data:` line, with [DONE] kept as the string."""
    out: list[Any] = []
    for event in text.split("\n\n"):
        for line in event.splitlines():
            if line.startswith("data: "):
                payload = line[6:]
                out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def named_events(text: str) -> list[tuple[str, Any]]:
    out = []
    for event in filter(None, text.split("\n\n")):
        name, data = event.split("\n")
        assert name.startswith("event: ")
        assert data.startswith("data: ")
        out.append((name[7:], orjson.loads(data[6:])))
    return out


# --- OpenAI endpoints ------------------------------------------------------------------


async def test_chat_completion_non_stream_has_openai_shape(provider: Client) -> None:
    resp = await provider.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["id"].startswith("chatcmpl-mock-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-4o-mini"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Mock answer: hi there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 2 + 3,
        "completion_tokens": 6,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


async def test_chat_max_tokens_below_word_count_cuts_answer_with_length(provider: Client) -> None:
    resp = await provider.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})
    choice = (await resp.json())["choices"][0]
    assert choice["message"]["content"] == "Mock answer:"
    assert choice["finish_reason"] == "length"


async def test_chat_stream_without_include_usage_frames_role_words_finish_done(
    provider: Client,
) -> None:
    resp = await provider.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 200
    assert resp.content_type == "text/event-stream"
    events = data_events(await resp.text())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    words = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert words == ["Mock", " answer:", " hi", " there"]
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }


async def test_chat_stream_with_include_usage_ends_with_usage_chunk(provider: Client) -> None:
    payload = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    resp = await provider.post("/v1/chat/completions", json=payload)
    events = data_events(await resp.text())
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["total_tokens"] == 11
    assert all(c["usage"] is None for c in events[:-2])
    assert events[-3]["choices"][0]["finish_reason"] == "stop"


async def test_completions_answer_last_prompt_whole_and_streamed(provider: Client) -> None:
    payload = {"model": "gpt-3.5-turbo-instruct", "prompt": ["first", "Say hi"]}
    body = await (await provider.post("/v1/completions", json=payload)).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Mock answer: Say hi"
    assert body["usage"]["prompt_tokens"] == 2 + 2 + 6
    stream = await provider.post("/v1/completions", json={**payload, "stream": True})
    events = data_events(await stream.text())
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == "Mock answer: Say hi"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_embeddings_default_to_16_floats_and_base64_gives_same_vector(
    provider: Client,
) -> None:
    payload = {"model": "text-embedding-3-small", "input": ["alpha", "beta"]}
    floats = await (await provider.post("/v1/embeddings", json=payload)).json()
    assert floats["object"] == "list"
    assert [d["index"] for d in floats["data"]] == [0, 1]
    vector = floats["data"][0]["embedding"]
    assert len(vector) == 16
    assert all(-1 <= x <= 1 for x in vector)
    assert floats["usage"] == {"prompt_tokens": 2 + 1, "total_tokens": 3}
    b64 = await (
        await provider.post("/v1/embeddings", json={**payload, "encoding_format": "base64"})
    ).json()
    decoded = struct.unpack("<16f", base64.b64decode(b64["data"][0]["embedding"]))
    assert list(decoded) == vector


async def test_embeddings_dimensions_and_bad_input(provider: Client) -> None:
    payload = {"model": "e", "input": [[1, 2, 3]], "dimensions": 5}
    body = await (await provider.post("/v1/embeddings", json=payload)).json()
    assert len(body["data"][0]["embedding"]) == 5
    assert body["usage"]["prompt_tokens"] == 3
    bad = await provider.post("/v1/embeddings", json={"model": "e", "input": []})
    assert bad.status == 400
    assert (await bad.json())["error"]["type"] == "invalid_request_error"


async def test_responses_body_has_message_output_and_usage(provider: Client) -> None:
    payload = {"model": "gpt-4o-mini", "instructions": "be kind", "input": "Hello"}
    body = await (await provider.post("/v1/responses", json=payload)).json()
    assert body["id"].startswith("resp_mock_")
    assert body["object"] == "response"
    assert body["status"] == "completed"
    [message] = body["output"]
    assert message["type"] == "message"
    assert message["content"][0]["type"] == "output_text"
    assert message["content"][0]["text"] == "Mock answer: Hello"
    assert body["usage"]["input_tokens"] == 2 + 2 + 6
    assert body["usage"]["total_tokens"] == 10 + body["usage"]["output_tokens"]


async def test_responses_stream_sends_named_events_ending_completed(provider: Client) -> None:
    payload = {"model": "gpt-4o-mini", "input": "Hello you", "stream": True}
    events = named_events(await (await provider.post("/v1/responses", json=payload)).text())
    names = [name for name, _ in events]
    assert names[0] == "response.created"
    assert names[-1] == "response.completed"
    assert all(data["type"] == name for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    deltas = [data["delta"] for name, data in events if name == "response.output_text.delta"]
    assert deltas == ["Mock", " answer:", " Hello", " you"]
    assert events[-1][1]["response"]["usage"]["output_tokens"] > 0


async def test_models_list_get_and_unknown_id(provider: Client) -> None:
    listing = await (await provider.get("/v1/models")).json()
    assert listing["object"] == "list"
    assert {"gpt-4o-mini", "claude-haiku-4-5"} <= {m["id"] for m in listing["data"]}
    one = await (await provider.get("/v1/models/gpt-4o")).json()
    assert one == {"id": "gpt-4o", "object": "model", "created": one["created"], "owned_by": "mock"}
    missing = await provider.get("/v1/models/gpt-9")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "model_not_found"


# --- Anthropic endpoints ---------------------------------------------------------------


async def test_message_non_stream_has_anthropic_shape_with_cache_reads(provider: Client) -> None:
    resp = await provider.post("/v1/messages", json=MESSAGE, headers={"x-mock-cached-tokens": "3"})
    body = await resp.json()
    assert body["id"].startswith("msg_mock_")
    assert body["type"] == "message"
    assert body["content"] == [{"type": "text", "text": "Mock answer: hello"}]
    assert body["stop_reason"] == "end_turn"
    assert body["stop_sequence"] is None
    # 5 prompt tokens, 3 of them read from the cache, which Anthropic counts apart.
    assert body["usage"] == {
        "input_tokens": 2,
        "output_tokens": 5,
        "cache_read_input_tokens": 3,
        "cache_creation_input_tokens": 0,
    }


async def test_message_stream_sends_anthropic_event_sequence(provider: Client) -> None:
    payload = {**MESSAGE, "stream": True, "max_tokens": 1}
    resp = await provider.post("/v1/messages", json=payload)
    assert resp.content_type == "text/event-stream"
    events = named_events(await resp.text())
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] == 5
    assert start["usage"]["output_tokens"] == 1
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "Mock"}
    assert events[5][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[5][1]["usage"] == {"output_tokens": 1}


async def test_count_tokens_returns_prompt_tokens(provider: Client) -> None:
    payload = {"model": "claude-haiku-4-5", "system": "abcdefgh", "messages": MESSAGE["messages"]}
    resp = await provider.post("/v1/messages/count_tokens", json=payload)
    assert await resp.json() == {"input_tokens": 2 + 2 + 6}


# --- errors, scripts and faults ---------------------------------------------------------


async def test_unknown_path_is_404_unknown_url_and_recorded(
    provider: Client, state: MockState
) -> None:
    resp = await provider.get("/v1/files/file-1?x=1")
    assert resp.status == 404
    error = (await resp.json())["error"]
    assert error["code"] == "unknown_url"
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None
    assert [(r.method, r.path, r.query) for r in state.requests] == [
        ("GET", "/v1/files/file-1", "x=1")
    ]


async def test_bad_json_is_400_in_each_dialect(provider: Client) -> None:
    openai_resp = await provider.post("/v1/chat/completions", data=b"{nope")
    assert openai_resp.status == 400
    assert (await openai_resp.json())["error"]["type"] == "invalid_request_error"
    anthropic_resp = await provider.post("/v1/messages", data=b"[1]")
    assert anthropic_resp.status == 400
    body = await anthropic_resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"


async def test_model_script_beats_any_model_script_which_beats_headers(
    provider: Client, state: MockState
) -> None:
    state.push([ScriptStep(reply="for anyone")])
    state.push([ScriptStep(reply="for mini")], model="gpt-4o-mini")
    headers = {"x-mock-reply": "from header"}
    replies = []
    for _ in range(3):
        resp = await provider.post("/v1/chat/completions", json=CHAT, headers=headers)
        replies.append((await resp.json())["choices"][0]["message"]["content"])
    assert replies == ["for mini", "for anyone", "from header"]


async def test_script_for_other_model_is_left_alone(provider: Client, state: MockState) -> None:
    state.push([ScriptStep(status=500)], model="gpt-4o")
    assert (await provider.post("/v1/chat/completions", json=CHAT)).status == 200
    assert len(state.scripts["gpt-4o"]) == 1


async def test_status_header_gives_openai_error_and_echoes_retry_headers(
    provider: Client,
) -> None:
    headers = {
        "x-mock-status": "429",
        "x-mock-retry-after": "7",
        "x-mock-retry-after-ms": "7000",
        "x-mock-should-retry": "true",
    }
    resp = await provider.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7"
    assert resp.headers["retry-after-ms"] == "7000"
    assert resp.headers["x-should-retry"] == "true"
    assert await resp.json() == {
        "error": {"message": "mock 429", "type": "rate_limit_error", "param": None, "code": None}
    }


async def test_error_code_goes_in_openai_code_and_type(provider: Client) -> None:
    headers = {"x-mock-status": "429", "x-mock-error-code": "insufficient_quota"}
    resp = await provider.post("/v1/chat/completions", json=CHAT, headers=headers)
    error = (await resp.json())["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    server = await provider.post(
        "/v1/chat/completions", json=CHAT, headers={"x-mock-status": "503"}
    )
    assert (await server.json())["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(529, "overloaded_error"), (429, "rate_limit_error"), (500, "api_error")],
)
async def test_status_header_gives_anthropic_error_shape(
    provider: Client, status: int, error_type: str
) -> None:
    resp = await provider.post("/v1/messages", json=MESSAGE, headers={"x-mock-status": str(status)})
    assert resp.status == status
    assert await resp.json() == {
        "type": "error",
        "error": {"type": error_type, "message": f"mock {status}"},
    }


async def test_scripted_error_carries_extra_headers(provider: Client, state: MockState) -> None:
    state.push([ScriptStep(status=503, headers={"Retry-After": "1"})])
    resp = await provider.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"


async def read_until_broken(resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """Everything received, and whether the connection broke before the body ended."""
    received = b""
    try:
        while chunk := await resp.content.readany():
            received += chunk
    except aiohttp.ClientPayloadError:
        return received, True
    return received, False


@pytest.mark.parametrize("delay_ms", ["0", "5"])
async def test_cut_after_sends_k_chunks_then_breaks_connection(
    provider: Client, delay_ms: str
) -> None:
    headers = {"x-mock-cut-after": "3", "x-mock-chunk-delay-ms": delay_ms}
    payload = {**CHAT, "stream": True}
    resp = await provider.post("/v1/chat/completions", json=payload, headers=headers)
    assert resp.status == 200
    received, broken = await read_until_broken(resp)
    assert broken
    events = data_events(received.decode())
    assert len(events) == 3
    assert "[DONE]" not in events


async def test_cut_after_on_a_buffered_answer_sends_that_many_bytes_then_breaks(
    provider: Client,
) -> None:
    resp = await provider.post("/v1/chat/completions", json=CHAT, headers={"x-mock-cut-after": "7"})
    assert resp.status == 200
    received, broken = await read_until_broken(resp)
    assert broken
    assert received == b'{"id":"'
    assert int(resp.headers["Content-Length"]) > 7


async def test_cut_after_beyond_stream_length_still_withholds_terminal_event(
    provider: Client, state: MockState
) -> None:
    state.push([ScriptStep(reply="a b", cut_after=100)])
    resp = await provider.post("/v1/messages", json={**MESSAGE, "stream": True})
    received, broken = await read_until_broken(resp)
    assert broken
    assert b"message_delta" in received
    assert b"message_stop" not in received


async def test_malformed_sends_truncated_json_with_200(provider: Client) -> None:
    resp = await provider.post("/v1/chat/completions", json=CHAT, headers={"x-mock-malformed": "1"})
    assert resp.status == 200
    body = await resp.read()
    assert body.startswith(b'{"id":"chatcmpl-mock-')
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)


async def test_malformed_stream_breaks_one_event_json(provider: Client) -> None:
    headers = {"x-mock-malformed": "1"}
    resp = await provider.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
    )
    with pytest.raises(orjson.JSONDecodeError):
        data_events(await resp.text())


async def test_latency_header_delays_the_answer(provider: Client) -> None:
    started = time.monotonic()
    resp = await provider.post(
        "/v1/chat/completions", json=CHAT, headers={"x-mock-latency-ms": "150"}
    )
    assert resp.status == 200
    assert time.monotonic() - started >= 0.15


async def test_ttfb_delays_first_chunk_but_not_headers(provider: Client, state: MockState) -> None:
    state.push([ScriptStep(ttfb_s=0.2)])
    started = time.monotonic()
    resp = await provider.post("/v1/chat/completions", json={**CHAT, "stream": True})
    headers_at = time.monotonic() - started
    await resp.read()
    assert headers_at < 0.2 <= time.monotonic() - started


async def test_redirect_header_answers_307_with_location(provider: Client) -> None:
    headers = {"x-mock-redirect": "http://169.254.169.254/latest"}
    resp = await provider.post(
        "/v1/chat/completions", json=CHAT, headers=headers, allow_redirects=False
    )
    assert resp.status == 307
    assert resp.headers["Location"] == "http://169.254.169.254/latest"


async def test_echo_headers_lists_every_request_header(provider: Client) -> None:
    headers = {"x-mock-echo-headers": "1", "Authorization": "Bearer sk-secret-1"}
    resp = await provider.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert resp.status == 400
    message = (await resp.json())["error"]["message"]
    assert "authorization: Bearer sk-secret-1" in message
    assert "x-mock-echo-headers: 1" in message


async def test_bad_mock_header_value_is_400(provider: Client) -> None:
    resp = await provider.post("/v1/chat/completions", json=CHAT, headers={"x-mock-status": "x"})
    assert resp.status == 400
    assert "x-mock-status" in (await resp.json())["error"]["message"]


async def test_every_request_is_recorded_before_its_fault(
    provider: Client, state: MockState
) -> None:
    state.push([ScriptStep(status=500), ScriptStep(status=429)])
    for _ in range(3):
        await provider.post("/v1/chat/completions?a=b", json=CHAT, headers={"X-App": "Tag"})
    assert len(state.requests) == 3
    first = state.requests[0]
    assert (first.method, first.path, first.query) == ("POST", "/v1/chat/completions", "a=b")
    assert first.headers["x-app"] == "Tag"
    assert first.json() == CHAT


# --- api key ----------------------------------------------------------------------------


@pytest.fixture
def keyed_app() -> web.Application:
    return create_mock_app(api_key=KEY)


@pytest.fixture
async def keyed(aiohttp_client: MakeClient, keyed_app: web.Application) -> Client:
    return await aiohttp_client(keyed_app)


async def test_missing_or_wrong_key_is_401_in_provider_shape(
    keyed: Client, keyed_app: web.Application
) -> None:
    openai_resp = await keyed.post("/v1/chat/completions", json=CHAT)
    assert openai_resp.status == 401
    assert (await openai_resp.json())["error"]["code"] == "invalid_api_key"
    wrong = {"x-api-key": "sk-wrong"}
    anthropic_resp = await keyed.post("/v1/messages", json=MESSAGE, headers=wrong)
    assert anthropic_resp.status == 401
    assert (await anthropic_resp.json())["error"]["type"] == "authentication_error"
    assert len(keyed_app[MOCK_STATE].requests) == 2


async def test_key_is_accepted_in_either_header_on_any_path(keyed: Client) -> None:
    bearer = {"Authorization": f"Bearer {KEY}"}
    x_api_key = {"x-api-key": KEY}
    assert (await keyed.post("/v1/chat/completions", json=CHAT, headers=bearer)).status == 200
    assert (await keyed.post("/v1/chat/completions", json=CHAT, headers=x_api_key)).status == 200
    assert (await keyed.post("/v1/messages", json=MESSAGE, headers=bearer)).status == 200
    assert (await keyed.post("/v1/messages", json=MESSAGE, headers=x_api_key)).status == 200


async def test_control_endpoints_need_no_key_and_are_not_recorded(keyed: Client) -> None:
    script = {"model": "gpt-4o-mini", "steps": [{"reply": "scripted", "headers": {"a": "b"}}]}
    assert await (await keyed.post("/_mock/script", json=script)).json() == {"queued": 1}
    auth = {"Authorization": f"Bearer {KEY}"}
    answer = await keyed.post("/v1/chat/completions", json=CHAT, headers=auth)
    assert answer.headers["a"] == "b"
    assert (await answer.json())["choices"][0]["message"]["content"] == "scripted"
    recorded = await (await keyed.get("/_mock/requests")).json()
    assert len(recorded) == 1
    assert recorded[0]["path"] == "/v1/chat/completions"
    assert orjson.loads(recorded[0]["body"]) == CHAT
    assert recorded[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert (await keyed.post("/_mock/reset")).status == 200
    assert await (await keyed.get("/_mock/requests")).json() == []


async def test_control_script_with_unknown_field_is_400(provider: Client) -> None:
    resp = await provider.post("/_mock/script", json={"steps": [{"stauts": 500}]})
    assert resp.status == 400
    assert "stauts" in (await resp.json())["error"]


# --- the official SDKs ------------------------------------------------------------------


@pytest.fixture
async def server_url(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> str:
    server = await aiohttp_server(create_mock_app(api_key=KEY))
    return str(server.make_url("")).rstrip("/")


async def test_openai_sdk_parses_chat_embeddings_and_responses(server_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{server_url}/v1", api_key=KEY, max_retries=0) as sdk:
        messages: Any = CHAT["messages"]
        chat = await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert chat.choices[0].message.content == "Mock answer: hi there"
        assert chat.usage is not None
        assert chat.usage.total_tokens == 11
        stream = await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Mock answer: hi there"
        assert chunks[-1].usage is not None
        vectors = await sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert [len(d.embedding) for d in vectors.data] == [16, 16]
        response = await sdk.responses.create(model="gpt-4o-mini", input="Hello")
        assert response.output_text == "Mock answer: Hello"
        events = await sdk.responses.create(model="gpt-4o-mini", input="Hello", stream=True)
        types = [event.type async for event in events]
        assert types[0] == "response.created"
        assert types[-1] == "response.completed"


async def test_anthropic_sdk_parses_message_and_stream(server_url: str) -> None:
    async with anthropic.AsyncAnthropic(base_url=server_url, api_key=KEY, max_retries=0) as sdk:
        messages: Any = MESSAGE["messages"]
        message = await sdk.messages.create(
            model="claude-haiku-4-5", max_tokens=100, messages=messages
        )
        assert message.content[0].type == "text"
        assert message.content[0].text == "Mock answer: hello"
        assert message.stop_reason == "end_turn"
        async with sdk.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=messages
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        assert text == "Mock answer: hello"
        assert final.usage.output_tokens == 5
        raw = await sdk.messages.create(
            model="claude-haiku-4-5", max_tokens=100, messages=messages, stream=True
        )
        assert [event.type async for event in raw][-1] == "message_stop"

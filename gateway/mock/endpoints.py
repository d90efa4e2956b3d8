"""The provider endpoints: each turns one parsed request into a JSON body or a list of events."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.mock import anthropic_wire, embeddings, openai_wire, responses_wire
from gateway.mock.answers import Prompt, Turn, compose, prompt_tokens
from gateway.mock.faults import Dialect, MockError
from gateway.mock.prompts import (
    anthropic_prompt,
    chat_prompt,
    completion_prompt,
    embedding_inputs,
    responses_prompt,
)
from gateway.mock.state import MockState, ScriptStep

Reply = bytes | list[bytes]  # a JSON body, or the events of a stream
_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@dataclass(frozen=True, slots=True)
class Exchange:
    """One provider request on its way to an answer: its body, step and path parameters."""

    state: MockState
    body: dict[str, Any]
    step: ScriptStep
    cached_tokens: int
    match: dict[str, str]
    dialect: Dialect = "openai"  # of a path both providers serve (/v1/models): the caller's

    @property
    def model(self) -> str:
        model = self.body.get("model")
        return model if isinstance(model, str) else ""

    @property
    def streams(self) -> bool:
        return self.body.get("stream") is True

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    def turn(self, prompt: Prompt) -> Turn:
        limit = next(
            (self.body[f] for f in _LIMIT_FIELDS if isinstance(self.body.get(f), int)), None
        )
        answer = compose(prompt, self.step.reply, limit, self.cached_tokens)
        return Turn(self.state.next_serial(), int(time.time()), self.model, answer)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A route of the mock: its method, path, dialect and how it answers."""

    method: str
    path: str
    dialect: Dialect
    answer: Callable[[Exchange], Reply]
    scripted: bool = True  # whether scripts apply (requests with a JSON body naming a model)
    # Served to both providers' clients, each in its own shape: Anthropic's when the request
    # carries its `anthropic-version` header (as its SDK sends), else `dialect`'s.
    shared: bool = False

    def dialect_for(self, headers: Mapping[str, str]) -> Dialect:
        return "anthropic" if self.shared and "anthropic-version" in headers else self.dialect


def chat(exchange: Exchange) -> Reply:
    turn = exchange.turn(chat_prompt(exchange.body))
    if exchange.streams:
        return openai_wire.chat_events(turn, exchange.include_usage)
    return openai_wire.chat_body(turn)


def completions(exchange: Exchange) -> Reply:
    turn = exchange.turn(completion_prompt(exchange.body))
    if exchange.streams:
        return openai_wire.completion_events(turn, exchange.include_usage)
    return openai_wire.completion_body(turn)


def responses(exchange: Exchange) -> Reply:
    turn = exchange.turn(responses_prompt(exchange.body))
    if exchange.streams:
        return responses_wire.response_events(turn, exchange.body)
    return responses_wire.response_body(turn, exchange.body)


def messages(exchange: Exchange) -> Reply:
    turn = exchange.turn(anthropic_prompt(exchange.body))
    if exchange.streams:
        return anthropic_wire.message_events(turn)
    return anthropic_wire.message_body(turn)


def count_tokens(exchange: Exchange) -> Reply:
    return anthropic_wire.count_tokens_body(prompt_tokens(anthropic_prompt(exchange.body)))


def embed(exchange: Exchange) -> Reply:
    inputs = embedding_inputs(exchange.body)
    if not inputs:
        raise MockError(400, "input must be a non-empty string, token array or list of them")
    dimensions = exchange.body.get("dimensions", embeddings.DEFAULT_DIMENSIONS)
    if not isinstance(dimensions, int) or not 0 < dimensions <= embeddings.MAX_DIMENSIONS:
        raise MockError(400, f"dimensions must be 1 to {embeddings.MAX_DIMENSIONS}")
    encoding = exchange.body.get("encoding_format") or "float"
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": embeddings.encode(embeddings.float32_bytes(value, dimensions), encoding),
        }
        for index, value in enumerate(inputs)
    ]
    tokens = sum(embeddings.input_tokens(value) for value in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps({"object": "list", "data": data, "model": exchange.model, "usage": usage})


def models(exchange: Exchange) -> Reply:
    if exchange.dialect == "anthropic":
        return anthropic_wire.models_body(_claude_models())
    return openai_wire.models_body()


def model(exchange: Exchange) -> Reply:
    model_id = exchange.match["model_id"]
    if exchange.dialect == "anthropic":
        if model_id not in _claude_models():
            raise MockError(404, f"model: {model_id}")
        return anthropic_wire.model_body(model_id)
    body = openai_wire.model_body(model_id)
    if body is None:
        raise MockError(404, f"The model '{model_id}' does not exist", "model_not_found")
    return body


def _claude_models() -> list[str]:
    return [m for m in openai_wire.MODEL_IDS if m.startswith("claude-")]


ENDPOINTS = (
    Endpoint("POST", "/v1/chat/completions", "openai", chat),
    Endpoint("POST", "/v1/completions", "openai", completions),
    Endpoint("POST", "/v1/embeddings", "openai", embed),
    Endpoint("POST", "/v1/responses", "openai", responses),
    Endpoint("GET", "/v1/models", "openai", models, scripted=False, shared=True),
    Endpoint("GET", "/v1/models/{model_id}", "openai", model, scripted=False, shared=True),
    Endpoint("POST", "/v1/messages", "anthropic", messages),
    Endpoint("POST", "/v1/messages/count_tokens", "anthropic", count_tokens),
)

"""Stage: read the body within the size limit and learn the model and the stream flag.

Runs after authentication, so an unknown client cannot make the gateway read a large body.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import StreamReader, web
from aiohttp.web_protocol import RequestPayloadError

from gateway.context import RequestContext
from gateway.errors import BadRequest, BodyTooLarge, GatewayError
from gateway.headers import UPSTREAM_CHOOSING_HEADERS
from gateway.pipeline import Next

# SECURITY: body fields through which a client could choose the upstream or its credentials.
_UPSTREAM_FIELDS = frozenset(
    {"api_base", "base_url", "api_key", "api_version", "endpoint", "azure_endpoint", "host"}
)
_UPSTREAM_SUFFIXES = ("_host", "_base", "_base_url", "_endpoint", "_api_key")
# The request fields of the APIs served, none of them one of the above: passed without a
# look at their spelling (tests/security/test_upstream_choice.py checks that none is
# refused).
_API_FIELDS = frozenset(
    {
        "audio", "best_of", "dimensions", "echo", "encoding_format", "frequency_penalty",
        "include", "input", "instructions", "logit_bias", "logprobs", "max_completion_tokens",
        "max_output_tokens", "max_tokens", "messages", "metadata", "modalities", "model", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "previous_response_id",
        "prompt", "reasoning", "reasoning_effort", "response_format", "seed", "service_tier",
        "stop", "stop_sequences", "store", "stream", "stream_options", "suffix", "system",
        "temperature", "text", "thinking", "tool_choice", "tools", "top_k", "top_logprobs",
        "top_p", "truncation", "user",
    }
)  # fmt: skip
# Fields of one path whose name the rule above would refuse, but which choose no upstream:
# a batch's `endpoint` is the API path its requests are for ("/v1/chat/completions").
_PATH_FIELDS = {"/v1/batches": frozenset({"endpoint"})}
_NO_FIELDS: frozenset[str] = frozenset()
# The deepest nesting of arrays and objects that `reencode` writes wherever it is used.
MAX_NESTING = 253
# SECURITY: a model name is a field of every log line, and a key of memos that keep a few
# thousand of them (route choices, metric label sets, unpriced-model warnings): a name as
# long as a body would have them hold gigabytes. No model's name is this long.
MAX_MODEL_CHARS = 256
_DECODED_ENCODINGS = frozenset({"", "identity", "gzip", "deflate", "br", "zstd"})


class UnsupportedEncoding(GatewayError):
    status = 415
    error_type = "invalid_request_error"
    code = "unsupported_content_encoding"


class BodyTimeout(GatewayError):
    status = 408
    error_type = "invalid_request_error"
    code = "request_timeout"


async def read_body(ctx: RequestContext, call_next: Next) -> web.StreamResponse:
    request = ctx.request
    _refuse_upstream_headers(request)
    _refuse_unknown_encoding(request)
    server = ctx.runtime.config.server
    limit = server.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    try:
        if request.content.is_eof():  # all of it came with the headers: nothing to wait for
            ctx.body = read_buffered(request.content, limit)
        else:
            # SECURITY: a body trickled slowly holds a connection and a task; it gets a
            # deadline.
            async with asyncio.timeout(server.body_timeout_s):
                ctx.body = await read_limited(request.content, limit)
    except TimeoutError:
        raise BodyTimeout(
            f"The request body did not arrive within {server.body_timeout_s:g}s."
        ) from None
    except RequestPayloadError:  # e.g. a gzip body that does not inflate
        raise BadRequest("The request body could not be read (broken encoding).") from None
    needs_model = request.method == "POST" and request.path in ctx.dialect.model_endpoints
    if needs_model or (ctx.body and request.content_type == "application/json"):
        ctx.payload = _parse(ctx.body, required=needs_model)
    if ctx.payload is not None:
        _refuse_upstream_fields(ctx.payload, request.path)
        model = ctx.payload.get("model")
        if not isinstance(model, str):
            model = None
        elif len(model) > MAX_MODEL_CHARS:
            raise BadRequest(
                f"The 'model' is longer than {MAX_MODEL_CHARS} characters; no model's name is.",
                param="model",
            )
        if needs_model and not model:
            raise BadRequest("The request body needs a 'model' string.", param="model")
        ctx.model = model
        ctx.stream = ctx.payload.get("stream") is True
    return await call_next(ctx)


async def read_limited(content: StreamReader, limit: int) -> bytes:
    """Read a body in chunks, failing as soon as it passes `limit` bytes. aiohttp inflates a
    gzip or deflate body as it arrives, a slice at a time, so the limit counts inflated bytes
    and a small compressed body cannot inflate past it in memory."""
    parts: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def read_buffered(content: StreamReader, limit: int) -> bytes:
    """A body that has arrived whole (inflated already, if it was compressed)."""
    body = content.read_nowait()
    if len(body) > limit:
        raise _too_large(limit)
    return body


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"The request body is larger than the gateway's limit of {limit} bytes.")


def _parse(body: bytes, *, required: bool) -> dict[str, Any] | None:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        if not required:
            return None  # a pass-through body the provider will judge for itself
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        if not required:
            return None
        raise BadRequest("The request body must be a JSON object.")
    return payload


def reencode(value: Any, option: int | None = None) -> bytes:
    """`value`, read from the client's body, as JSON again: for a stage that changes the body
    (a model rewrite, the stream usage option) or hashes it (the cache key).

    orjson reads JSON nested up to 1024 levels deep but writes at most 254 (the cache key
    holds the body one level down), so a body nested deeper is refused here, as a bad body,
    when a stage has to write it, rather than when it is read: a check of every body's depth
    would cost a walk of each, and would refuse bodies that go to the provider untouched,
    byte for byte. A value read from JSON can fail to encode for its depth alone."""
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
        raise BadRequest(
            f"The request body is nested too deeply: the gateway rewrites JSON nested at most "
            f"{MAX_NESTING} levels deep."
        ) from None


def _refuse_upstream_fields(payload: dict[str, Any], path: str) -> None:
    for field in payload:
        if field in _API_FIELDS:
            continue
        lower = field.lower()
        refused = lower in _UPSTREAM_FIELDS or lower.endswith(_UPSTREAM_SUFFIXES)
        if refused and field not in _PATH_FIELDS.get(path, _NO_FIELDS):
            raise BadRequest(
                f"The field '{field}' is not accepted: the gateway's configuration alone "
                "chooses the provider and its credentials.",
                param=field,
                code="upstream_override_refused",
            )


def _refuse_unknown_encoding(request: web.Request) -> None:
    """aiohttp decodes the encodings below itself (one it has no decoder for is refused before
    any handler runs: see gateway.server_limits); any other would reach the provider as bytes
    it cannot read, without their label."""
    encoding = request.headers.get("Content-Encoding", "").lower()
    if encoding not in _DECODED_ENCODINGS:
        raise unsupported_encoding()


def unsupported_encoding() -> UnsupportedEncoding:
    return UnsupportedEncoding(
        "The request body's Content-Encoding is not supported; send it uncompressed, "
        "or as gzip or deflate."
    )


def _refuse_upstream_headers(request: web.Request) -> None:
    headers = request.headers
    # A lookup of each in the (case-insensitive) headers, not a lower() of every header sent.
    for refused in UPSTREAM_CHOOSING_HEADERS:
        if refused in headers:
            sent = next(name for name in headers if name.lower() == refused)  # its spelling
            raise BadRequest(
                f"The header '{sent}' is not accepted: the gateway's configuration alone "
                "chooses the provider.",
                code="upstream_override_refused",
            )

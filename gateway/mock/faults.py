"""Faults on demand: `x-mock-*` request headers read as a ScriptStep, and error answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from aiohttp import web

from gateway.mock import anthropic_wire, openai_wire
from gateway.mock.state import DEFAULT_STEP, ScriptStep

Dialect = Literal["openai", "anthropic"]
JSON = "application/json"
# Request header -> response header it is sent back as.
_ECHOED = {
    "x-mock-retry-after": "Retry-After",
    "x-mock-retry-after-ms": "retry-after-ms",
    "x-mock-should-retry": "x-should-retry",
}


class MockError(Exception):
    """An answer in the provider's error shape, raised by an endpoint."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _number(headers: Mapping[str, str], name: str, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(headers[name])
    except ValueError:
        raise MockError(400, f"invalid {name} header: {headers[name]!r}") from None


def _seconds(headers: Mapping[str, str], name: str) -> float:
    return float(_number(headers, name, float)) / 1000 if name in headers else 0.0


def _optional_int(headers: Mapping[str, str], name: str) -> int | None:
    return int(_number(headers, name, int)) if name in headers else None


def step_from_headers(headers: Mapping[str, str]) -> ScriptStep:
    """The step the `x-mock-*` headers ask for (lower-cased names); the default if none."""
    if not any(name.startswith("x-mock-") for name in headers):
        return DEFAULT_STEP
    return ScriptStep(
        status=_optional_int(headers, "x-mock-status") or 200,
        headers={echo: headers[name] for name, echo in _ECHOED.items() if name in headers},
        error_code=headers.get("x-mock-error-code"),
        latency_s=_seconds(headers, "x-mock-latency-ms"),
        ttfb_s=_seconds(headers, "x-mock-ttfb-ms"),
        chunk_delay_s=_seconds(headers, "x-mock-chunk-delay-ms"),
        cut_after=_optional_int(headers, "x-mock-cut-after"),
        malformed=headers.get("x-mock-malformed") == "1",
        reply=headers.get("x-mock-reply"),
        cached_tokens=_optional_int(headers, "x-mock-cached-tokens"),
        redirect=headers.get("x-mock-redirect"),
        echo_headers=headers.get("x-mock-echo-headers") == "1",
    )


def cached_tokens(step: ScriptStep, headers: Mapping[str, str]) -> int:
    """The step's cached tokens, else the header's (a scripted step may leave them to it)."""
    if step.cached_tokens is not None:
        return step.cached_tokens
    return _optional_int(headers, "x-mock-cached-tokens") or 0


def error_response(
    dialect: Dialect,
    status: int,
    message: str,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    if dialect == "anthropic":
        body = anthropic_wire.error_body(status, message, code)
    else:
        body = openai_wire.error_body(status, message, code)
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


def fault_response(
    dialect: Dialect, step: ScriptStep, request_headers: Mapping[str, str]
) -> web.Response | None:
    """The redirect or error the step asks for, or None for a normal answer."""
    if step.redirect is not None:
        headers = {**step.headers, "Location": step.redirect}
        return web.Response(status=307, headers=headers)
    if step.echo_headers:
        listed = "; ".join(f"{name}: {value}" for name, value in request_headers.items())
        status = step.status if step.status >= 400 else 400
        return error_response(
            dialect, status, f"mock echo: {listed}", step.error_code, step.headers
        )
    if step.status >= 300:
        message = f"mock {step.status}"
        return error_response(dialect, step.status, message, step.error_code, step.headers)
    return None

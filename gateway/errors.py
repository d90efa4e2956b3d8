"""Gateway error classes: each carries its HTTP status, error type, code and retryability."""

from __future__ import annotations

import traceback


class GatewayError(Exception):
    """An error the gateway answers with; only the edge renders it, in the client's dialect.

    `error_type` follows OpenAI's vocabulary; the Anthropic dialect maps it to its own.
    """

    status: int = 500
    error_type: str = "api_error"
    code: str | None = None
    # Whether the client may retry: False adds `x-should-retry: false` so SDKs do not retry.
    should_retry: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}


class BadRequest(GatewayError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(GatewayError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    error_type = "not_found_error"
    code = "unknown_url"


class BodyTooLarge(GatewayError):
    status = 413
    error_type = "request_too_large"
    code = "request_too_large"


class RateLimited(GatewayError):
    """Over the key's per-minute limit: the SDK may wait `Retry-After` and try again."""

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"
    should_retry = True


class BudgetExhausted(GatewayError):
    """A budget is spent; retrying before the period resets cannot help."""

    status = 429
    error_type = "insufficient_quota"
    code = "insufficient_quota"


class UpstreamFailed(GatewayError):
    status = 502
    error_type = "api_error"
    code = "upstream_failed"


class Unavailable(GatewayError):
    status = 503
    error_type = "overloaded_error"
    code = "unavailable"


class DeadlineExceeded(GatewayError):
    status = 504
    error_type = "timeout_error"
    code = "deadline_exceeded"


class InternalError(GatewayError):
    """What an unexpected exception becomes; its message never reaches the client."""

    status = 500
    error_type = "api_error"
    code = "internal_error"


def release(exc: BaseException) -> None:
    """Let go of what a handled exception still holds: the local variables of the frames it
    passed through, and the exceptions chained to it. Both can lead back to the exception (a
    frame that kept it in a variable; an error kept on the failure it was raised from), which
    would leave it, and every object of its request, to the cycle collector."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)  # a frame still running is left as is
        linked = (current.__cause__, current.__context__, *current.args)  # args: a wrapped error
        pending += [e for e in linked if isinstance(e, BaseException)]
        current.__cause__ = current.__context__ = None

"""The whole-request deadline: the route's `timeout_s`, shortened (never lengthened) by clients."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from gateway.config import RouteConfig
from gateway.errors import DeadlineExceeded
from gateway.records import record

CLIENT_TIMEOUT_HEADER = "x-gateway-timeout"
SDK_TIMEOUT_HEADER = "x-stainless-read-timeout"
# The SDK's own timer runs at the same moment; answering a little earlier means the client
# gets the gateway's 504 (with x-should-retry: false) instead of timing out and retrying.
_SDK_MARGIN_S = 0.5
_SDK_MARGIN_RATIO = 0.1


@record
class Deadline:
    """An absolute time on `time.monotonic`, and where its length came from."""

    at: float
    total_s: float
    source: str
    # Shortened by the client (its header or its SDK's timeout): reaching it says nothing of
    # the provider, which may simply need longer than this client will wait.
    by_client: bool = False

    def remaining_s(self) -> float:
        return self.at - time.monotonic()

    def error(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"The provider did not answer within {self.total_s:g}s ({self.source})."
        )


def request_deadline(route: RouteConfig, headers: Mapping[str, str], elapsed_s: float) -> Deadline:
    """Counted from the request's arrival (`elapsed_s` ago), like the client's own timer."""
    total, source = route.timeout_s, f"route '{route.name}' timeout_s"
    asked = _seconds(headers.get(CLIENT_TIMEOUT_HEADER))
    if asked is not None and asked < total:
        total, source = asked, f"{CLIENT_TIMEOUT_HEADER} header"
    sdk = _seconds(headers.get(SDK_TIMEOUT_HEADER))
    if sdk is not None:
        sdk -= min(_SDK_MARGIN_S, sdk * _SDK_MARGIN_RATIO)
        if sdk < total:
            total, source = sdk, "the client SDK's timeout"
    by_client = total < route.timeout_s
    return Deadline(time.monotonic() - elapsed_s + total, total, source, by_client)


def _seconds(value: str | None) -> float | None:
    """A positive, finite number of seconds; anything else is ignored."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None

"""Output anomalies of a buffered answer: invalid JSON in JSON mode, empty, truncated, refusal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.records import record

JSON_FORMATS = frozenset({"json_object", "json_schema"})


@record
class Output:
    """One generated answer (a choice, a message), reduced to what the checks need."""

    text: str
    truncated: bool = False
    refused: bool = False
    tool_use: bool = False


def wants_json(path: str, payload: dict[str, Any] | None) -> bool:
    """Whether the request asks for a JSON answer (an object, or one following a schema)."""
    if payload is None:
        return False
    fmt: Any = None
    if path == "/v1/chat/completions":
        fmt = payload.get("response_format")
    elif path == "/v1/responses":
        fmt = _get(payload.get("text"), "format")
    elif path == "/v1/messages":
        fmt = payload.get("output_format") or _get(payload.get("output_config"), "format")
    return isinstance(fmt, dict) and fmt.get("type") in JSON_FORMATS


def anomalies(path: str, payload: dict[str, Any] | None, answer: Any) -> list[str]:
    """The anomalies of a parsed 200 answer on `path`, each named once, in a fixed order:
    invalid_json (JSON mode only), empty, truncated, refusal. A tool call or a refusal is
    neither empty nor invalid JSON."""
    read = _READERS.get(path)
    if read is None or not isinstance(answer, dict):
        return []
    json_mode = wants_json(path, payload)
    invalid = empty = truncated = refused = False
    for o in read(answer):
        answered_otherwise = o.tool_use or o.refused
        invalid = invalid or (json_mode and not answered_otherwise and not _is_json(o.text))
        empty = empty or not (answered_otherwise or o.text.strip())
        truncated = truncated or o.truncated
        refused = refused or o.refused
    found = (("invalid_json", invalid), ("empty", empty), ("truncated", truncated))
    return [name for name, seen in (*found, ("refusal", refused)) if seen]


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _list(obj: Any) -> list[Any]:
    return [item for item in obj if isinstance(item, dict)] if isinstance(obj, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _chat(answer: dict[str, Any]) -> list[Output]:
    outputs = []
    for choice in _list(answer.get("choices")):
        message = _get(choice, "message") or {}
        outputs.append(
            Output(
                text=_text(_get(message, "content")),
                truncated=choice.get("finish_reason") == "length",
                refused=bool(_get(message, "refusal")),
                tool_use=bool(_get(message, "tool_calls") or _get(message, "function_call")),
            )
        )
    return outputs


def _completion(answer: dict[str, Any]) -> list[Output]:
    return [
        Output(text=_text(c.get("text")), truncated=c.get("finish_reason") == "length")
        for c in _list(answer.get("choices"))
    ]


def _responses(answer: dict[str, Any]) -> list[Output]:
    items = _list(answer.get("output"))
    parts = [p for item in items for p in _list(item.get("content"))]
    reason = _get(answer.get("incomplete_details"), "reason")
    return [
        Output(
            text="".join(_text(p.get("text")) for p in parts if p.get("type") == "output_text"),
            truncated=reason == "max_output_tokens",
            refused=any(p.get("type") == "refusal" for p in parts),
            tool_use=any(_text(item.get("type")).endswith("_call") for item in items),
        )
    ]


def _messages(answer: dict[str, Any]) -> list[Output]:
    blocks = _list(answer.get("content"))
    stop = answer.get("stop_reason")
    return [
        Output(
            text="".join(_text(b.get("text")) for b in blocks if b.get("type") == "text"),
            truncated=stop == "max_tokens",
            refused=stop == "refusal",
            tool_use=any(b.get("type") == "tool_use" for b in blocks),
        )
    ]


_READERS: dict[str, Callable[[dict[str, Any]], list[Output]]] = {
    "/v1/chat/completions": _chat,
    "/v1/completions": _completion,
    "/v1/responses": _responses,
    "/v1/messages": _messages,
}

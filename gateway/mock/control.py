"""The `/_mock/*` control endpoints: queue scripted steps, list recorded requests, reset."""

from __future__ import annotations

from types import NoneType
from typing import Any

import orjson
from aiohttp import web

from gateway.mock.state import ANY_MODEL, MOCK_STATE, RecordedRequest, ScriptStep

STEP_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "status": (int,),
    "headers": (dict,),
    "error_code": (str, NoneType),
    "latency_s": (int, float),
    "ttfb_s": (int, float),
    "chunk_delay_s": (int, float),
    "cut_after": (int, NoneType),
    "malformed": (bool,),
    "reply": (str, NoneType),
    "cached_tokens": (int, NoneType),
    "redirect": (str, NoneType),
    "echo_headers": (bool,),
}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def step_from_json(data: Any) -> ScriptStep:
    """A ScriptStep from its JSON form; ValueError names the first wrong field."""
    if not isinstance(data, dict):
        raise ValueError("a step must be an object")
    for name, value in data.items():
        types = STEP_FIELD_TYPES.get(name)
        if types is None:
            raise ValueError(f"unknown step field {name!r}")
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"step field {name!r} has the wrong type")
    headers = data.get("headers", {})
    if not all(isinstance(v, str) for v in headers.values()):
        raise ValueError("step headers must map names to strings")
    return ScriptStep(**data)


async def push_script(request: web.Request) -> web.Response:
    try:
        data = orjson.loads(await request.read())
        model = data.get("model", ANY_MODEL)
        steps = [step_from_json(step) for step in data["steps"]]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        return _json({"error": f"bad script: {exc}"}, status=400)
    request.app[MOCK_STATE].push(steps, str(model))
    return _json({"queued": len(steps)})


def _as_json(recorded: RecordedRequest) -> dict[str, Any]:
    return {
        "method": recorded.method,
        "path": recorded.path,
        "query": recorded.query,
        "headers": recorded.headers,
        "body": recorded.body.decode("utf-8", "replace"),
    }


async def list_requests(request: web.Request) -> web.Response:
    return _json([_as_json(recorded) for recorded in request.app[MOCK_STATE].requests])


async def reset(request: web.Request) -> web.Response:
    request.app[MOCK_STATE].reset()
    return _json({"ok": True})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/_mock/script", push_script)
    app.router.add_get("/_mock/requests", list_requests)
    app.router.add_post("/_mock/reset", reset)

"""Lua scripts shipped as package files, called by SHA (EVALSHA), loaded on first use."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from gateway.store import Store


@dataclass(frozen=True, slots=True)
class Script:
    """One script and its SHA, sent as the EVALSHA command itself: redis-py's registered
    scripts check on every call whether the client is a pipeline, a check that costs more
    than the rest of the call."""

    source: str
    sha: str

    @classmethod
    def load(cls, package: str, name: str) -> Script:
        return cls.of(resources.files(package).joinpath(name).read_text("utf-8"))

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())

    async def run(self, redis: Store, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:  # the command itself: redis-py's evalsha only wraps it
            return await redis.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted or new Redis: EVAL also caches the script there
            return await redis.execute_command("EVAL", self.source, len(keys), *keys, *args)

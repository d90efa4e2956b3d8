"""Key lookup and route globs of a loaded config."""

from __future__ import annotations

from gateway.config import parse_config
from gateway.runtime import Runtime
from tests.conftest import KEY_A, KEY_B, base_config


def _runtime() -> Runtime:
    return Runtime.build(parse_config(base_config("http://127.0.0.1:1"), "<test>"))


def test_find_key_returns_the_key_whose_hash_matches() -> None:
    runtime = _runtime()
    found_a, found_b = runtime.find_key(KEY_A), runtime.find_key(KEY_B)
    assert found_a is not None
    assert found_a.name == "team-a"
    assert found_b is not None
    assert found_b.name == "team-b"


def test_find_key_rejects_unknown_and_hash_as_key() -> None:
    runtime = _runtime()
    assert runtime.find_key("gk-unknown") is None
    # The stored hash itself is not a key.
    assert runtime.find_key(runtime.config.keys[0].key_sha256) is None


def test_route_globs_match_path_and_model() -> None:
    chat = _runtime().routes[0]
    assert chat.matches("/v1/chat/completions", "gpt-4o-mini")
    assert not chat.matches("/v1/chat/completions", "claude-haiku")
    assert not chat.matches("/v1/embeddings", "gpt-4o")


def test_catch_all_route_matches_requests_without_model() -> None:
    catch_all = _runtime().routes[2]
    assert catch_all.matches("/v1/models", "")
    assert catch_all.matches("/v1/files/abc/content", "")

"""Config validation: good files load, bad ones name the file, the field path and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, load_config, parse_config
from tests.conftest import base_config

ROOT = Path(__file__).resolve().parents[2]


def _error(data: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "gw.yaml", env or {})
    return str(info.value)


def test_shipped_example_config_is_valid() -> None:
    config = load_config(ROOT / "config" / "gateway.example.yaml", env={})
    assert [r.name for r in config.routes][:3] == ["classify-cheap", "chat-cheap", "openai"]
    assert config.routes[1].model == "gpt-4o-mini"
    assert config.keys[0].budget is not None


def test_env_reference_is_expanded_and_secret_is_hidden() -> None:
    data = base_config("http://127.0.0.1:1")
    data["providers"]["openai"]["api_key"] = "${OPENAI_KEY}"
    config = parse_config(data, "gw.yaml", {"OPENAI_KEY": "sk-secret-value"})
    key = config.providers["openai"].api_key
    assert key is not None
    assert key.get_secret_value() == "sk-secret-value"
    assert "sk-secret-value" not in repr(config)


def test_env_default_is_used_when_variable_is_unset() -> None:
    data = base_config("http://127.0.0.1:1", storage={"url": "${STORE:-memory://}"})
    assert parse_config(data, "gw.yaml", {}).storage.url == "memory://"


def test_missing_env_variable_names_file_and_field() -> None:
    data = base_config("http://127.0.0.1:1")
    data["providers"]["openai"]["api_key"] = "${NOT_SET_ANYWHERE}"
    message = _error(data)
    assert message.startswith("gw.yaml: providers.openai.api_key:")
    assert "NOT_SET_ANYWHERE is not set" in message


def test_misspelt_field_is_an_error_naming_its_path() -> None:
    data = base_config("http://127.0.0.1:1")
    data["routes"][1]["timeout"] = 5
    assert "gw.yaml: routes[1].timeout: Extra inputs are not permitted" in _error(data)


def test_unknown_provider_in_route_is_an_error() -> None:
    data = base_config("http://127.0.0.1:1")
    data["routes"][0]["provider"] = "opnai"
    assert "routes[0].provider: unknown provider 'opnai'" in _error(data)


def test_key_with_unknown_route_is_an_error() -> None:
    data = base_config("http://127.0.0.1:1")
    data["keys"][1]["routes"] = ["chat", "nope"]
    assert "keys[1].routes: unknown route 'nope'" in _error(data)


def test_key_hash_must_be_sha256_hex() -> None:
    data = base_config("http://127.0.0.1:1")
    data["keys"][0]["key_sha256"] = "gk-plaintext-key"
    assert "keys[0].key_sha256" in _error(data)


def test_duplicate_route_names_are_an_error() -> None:
    data = base_config("http://127.0.0.1:1")
    data["routes"][1]["name"] = "chat"
    assert "routes[1].name: duplicate name 'chat'" in _error(data)


def test_provider_url_must_be_http() -> None:
    data = base_config("http://127.0.0.1:1")
    data["providers"]["openai"]["base_url"] = "file:///etc/passwd"
    assert "providers.openai.base_url" in _error(data)


def test_top_level_must_be_a_mapping() -> None:
    assert _error(["a", "b"]) == "gw.yaml: the top level must be a mapping"


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("providers: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(path)

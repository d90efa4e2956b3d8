"""Config validation: good files load, bad ones name the file, the field path and the problem."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, load_config, parse_config
from gateway.runtime import Runtime
from tests.conftest import base_config

ROOT = Path(__file__).resolve().parents[2]


def _error(data: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "gw.yaml", env or {})
    return str(info.value)


def test_shipped_example_config_is_valid() -> None:
    config = load_config(ROOT / "config" / "gateway.example.yaml", env={})
    assert [r.name for r in config.routes][:3] == ["classify-cheap", "chat-cheap", "local"]
    assert config.routes[1].model == "gpt-4o-mini"
    assert config.keys[0].budget is not None


def test_the_example_routes_each_model_to_the_provider_its_comments_name() -> None:
    """As the routing stage chooses: in order, in the client's wire format."""
    runtime = Runtime.build(load_config(ROOT / "config" / "gateway.example.yaml", env={}))

    def first(path: str, model: str, kind: str = "openai") -> str:
        return next(
            r.config.name
            for r in runtime.routes
            if r.provider.kind == kind and r.matches(path, model) and r.accepts("k", {}, 9)
        )

    assert first("/v1/chat/completions", "llama3.1-70b") == "local"
    assert first("/v1/chat/completions", "gpt-4.1") == "openai"
    assert first("/v1/messages", "claude-sonnet-4-5", "anthropic") == "claude"


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


def test_route_matching_an_unknown_key_name_is_an_error() -> None:
    data = base_config("http://127.0.0.1:1")
    data["routes"][0]["match"]["keys"] = ["team-a", "team-bb"]
    assert "gw.yaml: routes[0].match.keys: unknown key 'team-bb'" in _error(data)


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


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:99999/v1", "Port out of range 0-65535"),
        ("http://[::1/v1", "Invalid IPv6 URL"),
    ],
)
def test_a_provider_url_the_client_could_not_call_is_a_config_error(url: str, problem: str) -> None:
    data = base_config("http://127.0.0.1:1")
    data["providers"]["openai"]["base_url"] = url
    message = _error(data)
    assert f"providers.openai.base_url: not a URL the gateway can call: {problem}" in message


def test_top_level_must_be_a_mapping() -> None:
    assert _error(["a", "b"]) == "gw.yaml: the top level must be a mapping"


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("where", "section"),
    [("routes", "cache"), ("routes", "budget"), ("keys", "budget"), ("keys", "rate_limit")],
)
def test_a_section_written_with_nothing_under_it_is_an_error(
    tmp_path: Path, where: str, section: str
) -> None:
    """Its settings commented out, it reads as null: no cache, no budget, no rate limit,
    silently, where the file seems to ask for one."""
    data = base_config("http://127.0.0.1:9")
    data[where][0][section] = None
    path = tmp_path / "gw.yaml"
    text = yaml.safe_dump(data).replace(f"{section}: null", f"{section}:  # usd_per_day: 5")
    assert f"{section}:  #" in text
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert f"{where}[0]: '{section}' is empty: give it its settings" in message
    if section == "cache":
        assert "(cache: {} for its defaults)" in message
        data[where][0][section] = {}
        assert parse_config(data, "gw.yaml", {}).routes[0].cache is not None


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("providers: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_an_infinite_or_nan_amount_is_an_error_naming_its_path(value: float) -> None:
    data = base_config("http://127.0.0.1:1")
    data["keys"][0]["budget"] = {"usd_per_month": value}
    assert "keys[0].budget.usd_per_month: Input should be a finite number" in _error(data)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("foo://x", "the store URL must start with one of memory://, redis://"),
        ("redis://:s3cret@127.0.0.1:6379/abc", "the database after the address must be a number"),
        ("redis://127.0.0.1:6379/\u00b2", "the database after the address must be a number"),
        ("127.0.0.1:6379", "the store URL must start with one of"),
        ("unix:///run/redis.sock?db=x", "the store URL is not valid: Invalid value for 'db'"),
        ("redis://:s3cret@h:6379?db=one", "the store URL is not valid: Invalid value for 'db'"),
        ("redis://:s3cret@h:63x9/0", "the store URL is not valid: Port could not be cast"),
        ("unix://", "a unix:// URL needs the socket's path"),
        (
            "redis-cluster://h:7000?max_connections=x",
            "the store URL is not valid: Invalid value for 'max_connections'",
        ),
    ],
)
def test_a_store_url_that_would_fail_or_pick_another_database_is_refused_at_load(
    url: str, problem: str
) -> None:
    message = _error(base_config("http://127.0.0.1:1", storage={"url": url}))
    assert f"gw.yaml: storage.url: {problem}" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "redis://127.0.0.1:6379",
        "redis://h:6379/",
        "rediss://h/12",
        "redis://h:6379?db=3",
        "unix:///run/redis.sock?db=1",
        "redis-cluster://h:7000",
    ],
)
def test_the_store_urls_the_gateway_opens_are_accepted(url: str) -> None:
    config = parse_config(base_config("http://127.0.0.1:1", storage={"url": url}), "gw.yaml", {})
    assert config.storage.url == url


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_bytes(b"storage: {url: 'memory://'}\n\xff\n")
    with pytest.raises(ConfigError, match=r"gw.yaml: not UTF-8 text \(byte 28\)"):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "keys:\n  - name: kb\n    budget: {usd_per_day: 0.05}\n"
            "    budget: {usd_per_month: 5}\n",
            "gw.yaml: keys[0]: the key 'budget' is written twice (lines 3 and 4)",
        ),
        (
            "routes: []\nkeys: []\nroutes: []\n",
            "gw.yaml: the key 'routes' is written twice (lines 1 and 3)",
        ),
    ],
)
def test_a_key_written_twice_in_a_mapping_is_an_error_naming_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    """YAML would keep the last and drop the first: a day budget lost without a word."""
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value) == f"{tmp_path}/{message}"


def test_a_yaml_error_quotes_no_line_of_the_file(tmp_path: Path) -> None:
    """The line may hold a provider key written in the file; the error goes to logs and to an
    admin's reload answer: it says where, not what."""
    path = tmp_path / "gw.yaml"
    path.write_text("providers:\n  openai:\n    api_key: sk-secret-in-the-file: x\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "sk-secret" not in str(caught.value)
    assert str(caught.value) == (
        f"{path}: not valid YAML: mapping values are not allowed here (line 3, column 35)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "? [a, b]\n: 1\n",
            "gw.yaml: not valid YAML: while constructing a mapping (line 1, column 1); "
            "found unhashable key (line 1, column 3)",
        ),
        ("pricing: {? {a: 1} : {input: 1}}\n", "found unhashable key"),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", "gw.yaml: nested too deeply to read"),
    ],
)
def test_a_key_that_is_not_a_plain_value_or_a_file_nested_too_deep_is_a_config_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, env={})


def test_a_merged_key_may_still_be_set_again(tmp_path: Path) -> None:
    data = base_config("http://127.0.0.1:1")
    del data["keys"]
    a, b = (k["key_sha256"] for k in base_config("http://127.0.0.1:1")["keys"])
    path = tmp_path / "gw.yaml"
    path.write_text(
        yaml.safe_dump(data)
        + "keys:\n"
        + f"  - {{name: a, key_sha256: '{a}', routes: ['*'],\n"
        + "     rate_limit: &limits {rpm: 10, tpm: 1000}}\n"
        + f"  - {{name: b, key_sha256: '{b}', routes: ['*'],\n"
        + "     rate_limit: {<<: *limits, rpm: 20}}\n"
    )
    config = load_config(path, env={})
    limits = [k.rate_limit for k in config.keys]
    assert [(x.rpm, x.tpm) for x in limits if x] == [(10, 1000), (20, 1000)]

"""The `gateway` command: check-config and hash-key."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(ROOT / "config" / "gateway.example.yaml")]) == 0
    assert "ok (" in capsys.readouterr().out


def test_check_config_names_the_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {p: {kind: openai, base_url: 'http://x/v1'}}\nroutes: []\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: routes:" in err


def test_hash_key_makes_a_key_whose_sha256_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash-key", "--name", "team-x"]) == 0
    out = capsys.readouterr().out
    key = re.search(r"^key: (\S+)$", out, re.M)
    digest = re.search(r'key_sha256: "([0-9a-f]{64})"', out)
    assert key is not None
    assert digest is not None
    assert hashlib.sha256(key.group(1).encode()).hexdigest() == digest.group(1)
    assert "- name: team-x" in out


def test_hash_key_hashes_a_given_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash-key", "gk-given"]) == 0
    assert hashlib.sha256(b"gk-given").hexdigest() in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--config", "gw.yaml", "--port", "99999"],
        ["demo", "--port", "-5"],
        ["demo", "--mock-port", "http"],
        ["mock-provider", "--port", "70000"],
        ["demo", "--port", "\u00b2"],  # a digit to str.isdigit, not to int()
    ],
)
def test_a_port_out_of_range_is_refused_before_anything_starts(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "a port is a number from 1 to 65535, not " in capsys.readouterr().err


@pytest.mark.parametrize("workers", ["two", "0", "1.5", "\u0663"])
def test_workers_that_are_not_a_whole_number_are_named_in_the_error(
    workers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--config", "gw.yaml", "--workers", workers])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --workers: a whole number of 1 or more, not {workers!r}" in err


@pytest.mark.parametrize("name", ["", "team x", "-lead", "x" * 65])
def test_hash_key_refuses_a_name_the_config_would_refuse(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["hash-key", "--name", name])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --name: " in err
    assert "key_sha256" not in err

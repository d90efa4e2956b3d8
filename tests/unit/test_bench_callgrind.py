"""Reading a callgrind dump: each function's own instructions, by shared object, per request."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.bench.callgrind import main, parse

# Two objects, three functions; names compressed as callgrind writes them (a number defined
# with its name once, then the number alone), and one call whose inclusive cost (the line
# after `calls=`) must not count as the caller's own.
DUMP = """\
# callgrind format
version: 1
positions: line
events: Ir
summary: 1000

ob=(1) /usr/bin/python3.11
fl=(1) ceval.c
fn=(1) _PyEval_EvalFrameDefault
10 500
cob=(2) /usr/lib/libc.so.6
cfi=(2) ???
cfn=(2) memcpy
calls=3 0
11 250
+1 100

ob=(2)
fl=(2)
fn=(2)
0 250

ob=(1)
fl=(1)
fn=(3) PyObject_GetAttr
20 150

totals: 1004
"""


def test_self_costs_are_summed_by_function_and_by_shared_object() -> None:
    profile = parse(DUMP.splitlines())
    assert profile.total == 1000  # the summary line, which the docs' figures divide
    assert profile.by_function[("/usr/bin/python3.11", "_PyEval_EvalFrameDefault")] == 600
    assert profile.by_function[("/usr/lib/libc.so.6", "memcpy")] == 250
    assert profile.by_function[("/usr/bin/python3.11", "PyObject_GetAttr")] == 150
    assert profile.by_object() == {"/usr/bin/python3.11": 750, "/usr/lib/libc.so.6": 250}


def test_the_report_gives_shares_and_instructions_per_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "cg.out.1"
    dump.write_text(DUMP)
    assert main([str(dump), "--requests", "10"]) == 0
    out = capsys.readouterr().out
    assert "1,000 instructions, 100 per request over 10 requests" in out
    assert "| python3.11 | 75.0% | 75 |" in out
    assert "| libc.so.6 | 25.0% | 25 |" in out
    assert "| `_PyEval_EvalFrameDefault` | python3.11 | 60.0% | 60 |" in out


def test_a_missing_dump_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "absent")]) == 2
    assert "cannot read" in capsys.readouterr().err

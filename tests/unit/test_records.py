"""Records: immutable for the type checker, cheap to build, equal and hashable by value."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mypy import api

from gateway.records import record


@record
class _Point:
    x: int
    y: int = 0


def test_a_record_is_equal_and_hashable_by_value_and_has_no_instance_dict() -> None:
    assert _Point(1, 2) == _Point(1, 2)
    assert {_Point(1, 2), _Point(1, 2), _Point(3)} == {_Point(1, 2), _Point(3)}
    assert not hasattr(_Point(1), "__dict__")


def test_the_type_checker_refuses_an_assignment_to_a_records_field(tmp_path: Path) -> None:
    source = tmp_path / "assign.py"
    source.write_text(
        textwrap.dedent(
            """
            from gateway.accounting import Plan

            def change(plan: Plan) -> None:
                plan.amount_micro = 0
            """
        )
    )
    out, _, status = api.run(["--strict", "--no-incremental", str(source)])
    assert status == 1
    assert 'Property "amount_micro" defined in "Plan" is read-only' in out

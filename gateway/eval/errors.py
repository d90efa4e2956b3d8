"""The eval harness's bad-input error and how validation problems are worded."""

from __future__ import annotations

from pydantic import ValidationError


class EvalInputError(Exception):
    """Bad input (eval file, case file, template, results file); the message names the file,
    the case id where there is one, and the field. Raised before any request is sent."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def location(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a field path: `checks[0].pattern`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")


def describe_validation(exc: ValidationError, prefix: str) -> list[str]:
    """One line per pydantic problem: `<prefix>: <field path>: <message>`."""
    lines = []
    for err in exc.errors():
        where = location(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{prefix}: {where}: {msg}" if where else f"{prefix}: {msg}")
    return lines

"""Render prompt templates: `{name}` placeholders filled from a case's vars."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# Only `{identifier}` is a placeholder, so JSON examples in a prompt, nested ones included
# (`{"a": {"b": 1}}`), stay as they are; `{{identifier}}` writes a literal `{identifier}`.
_TOKEN = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


class MissingVariableError(KeyError):
    """A template names a variable the case does not define."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def placeholders(template: str) -> list[str]:
    """The variable names a template uses, in order of first use."""
    names: list[str] = []
    for match in _TOKEN.finditer(template):
        name = match.group(2)
        if name is not None and name not in names:
            names.append(name)
    return names


def render(template: str, variables: Mapping[str, Any]) -> str:
    """Fill every placeholder; strings go in as they are, other values as compact JSON."""

    def substitute(match: re.Match[str]) -> str:
        escaped, name = match.groups()
        if escaped is not None:
            return "{" + escaped + "}"
        if name not in variables:
            raise MissingVariableError(name)
        value = variables[name]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return _TOKEN.sub(substitute, template)

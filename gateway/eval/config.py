"""The eval file (YAML): frozen pydantic models and a loader whose errors name file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from gateway.config import Frozen
from gateway.eval.checks import Check
from gateway.eval.errors import EvalInputError, describe_validation

Side = Literal["A", "B"]
SIDES: tuple[Side, Side] = ("A", "B")

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_KEY_ENV = "GATEWAY_API_KEY"


class RequestParams(Frozen):
    """OpenAI chat parameters sent with every request; unset ones are left out of the body."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, gt=0)
    seed: int | None = None
    stop: list[str] | None = None
    response_format: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class PromptSpec(Frozen):
    """One prompt: system and user templates, inline or as files relative to the eval file."""

    label: str | None = None
    model: str | None = None
    system: str | None = None
    system_file: str | None = None
    user: str | None = None
    user_file: str | None = None
    # Overrides of the eval-wide params for this prompt only.
    params: RequestParams | None = None

    @model_validator(mode="after")
    def _one_source_each(self) -> PromptSpec:
        if (self.user is None) == (self.user_file is None):
            raise ValueError("give exactly one of user and user_file")
        if self.system is not None and self.system_file is not None:
            raise ValueError("give at most one of system and system_file")
        return self


class Prompts(Frozen):
    A: PromptSpec
    B: PromptSpec


class JudgeSpec(Frozen):
    """The model that grades `judge` checks, and its request parameters."""

    model: str = Field(min_length=1)
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(300, gt=0)


class EvalSpec(Frozen):
    description: str | None = None
    gateway_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+")] = DEFAULT_URL
    api_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = DEFAULT_KEY_ENV
    model: str | None = None
    prompts: Prompts
    cases: str = Field(min_length=1)
    # Checks applied to every case, before the case's own.
    checks: list[Check] = Field(default_factory=list)
    repetitions: int = Field(1, ge=1, le=100)
    concurrency: int = Field(4, ge=1, le=256)
    timeout_s: float = Field(60.0, gt=0)
    # False sends `Cache-Control: no-cache` on every request; repetitions after the first
    # always do, so that they measure the model rather than the gateway's cache.
    cache: bool = True
    params: RequestParams = RequestParams()
    judge: JudgeSpec | None = None

    @model_validator(mode="after")
    def _every_prompt_has_a_model(self) -> EvalSpec:
        for side in SIDES:
            if self.model is None and self.prompt(side).model is None:
                raise ValueError(
                    f"prompts.{side}.model: no model: set model or prompts.{side}.model"
                )
        return self

    def prompt(self, side: Side) -> PromptSpec:
        return self.prompts.A if side == "A" else self.prompts.B


def load_eval_spec(path: Path) -> EvalSpec:
    """Read and validate an eval file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalInputError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise EvalInputError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EvalInputError([f"{path}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise EvalInputError([f"{path}: the top level must be a mapping"])
    try:
        return EvalSpec.model_validate(data)
    except ValidationError as exc:
        raise EvalInputError(describe_validation(exc, str(path))) from None

"""Eval and case files: the shipped example loads; every bad input is named before any request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.eval.errors import EvalInputError
from gateway.eval.plan import Overrides, Plan, build_plan

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "evals" / "sentiment.yaml"
KEY = Overrides(key="gk-test")


def write_eval(tmp_path: Path, cases: list[Any] | None = None, **spec: Any) -> Path:
    data: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "prompts": {
            "A": {"user": "Classify: {text}"},
            "B": {"system": "One word.", "user": "{text}"},
        },
        "cases": "cases.json",
    }
    data.update(spec)
    default_cases = [{"id": "c1", "vars": {"text": "hi"}, "checks": [{"type": "valid_json"}]}]
    (tmp_path / "cases.json").write_text(json.dumps(cases or default_cases))
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def problems(path: Path, overrides: Overrides = KEY, env: dict[str, str] | None = None) -> str:
    with pytest.raises(EvalInputError) as caught:
        build_plan(path, overrides, env or {})
    return str(caught.value)


def test_shipped_example_loads_with_twenty_cases_and_one_word_prompt_b() -> None:
    plan = build_plan(EXAMPLE, KEY, {})
    assert len(plan.cases) == 20
    assert {c.case.id for c in plan.cases} == {f"r{i:02d}" for i in range(1, 21)}
    first = plan.cases[0]
    assert first.messages["A"][-1]["content"].endswith(first.case.vars["review"] + "\n")
    assert "one word" in first.messages["B"][0]["content"].lower()
    assert plan.prompts["A"].model == plan.prompts["B"].model == "gpt-4o-mini"
    assert plan.url == "http://127.0.0.1:8080"


def test_shipped_example_cases_are_exact_label_checks_of_every_label() -> None:
    cases = json.loads((EXAMPLE.parent / "sentiment_cases.json").read_text())
    assert all([c["type"] for c in case["checks"]] == ["exact"] for case in cases)
    labels = [case["checks"][0]["value"] for case in cases]
    assert {label: labels.count(label) for label in set(labels)} == {
        "positive": 7,
        "negative": 7,
        "neutral": 6,
    }


def test_key_is_read_from_the_named_environment_variable(tmp_path: Path) -> None:
    path = write_eval(tmp_path, api_key_env="EVAL_KEY")
    assert build_plan(path, Overrides(), {"EVAL_KEY": "from-env"}).key == "from-env"
    assert build_plan(path, Overrides(key="flag"), {"EVAL_KEY": "from-env"}).key == "flag"


def test_missing_key_names_the_variable_and_the_flag(tmp_path: Path) -> None:
    message = problems(write_eval(tmp_path), Overrides(), {})
    assert "api_key_env: environment variable GATEWAY_API_KEY is not set" in message
    assert "--key" in message


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write_eval(tmp_path, gateway_url="http://gw:1", concurrency=2)
    plan: Plan = build_plan(path, Overrides(url="http://other:9/", key="k", concurrency=7), {})
    assert (plan.url, plan.concurrency) == ("http://other:9", 7)


def test_misspelt_eval_field_is_named_with_the_file(tmp_path: Path) -> None:
    path = write_eval(tmp_path, prompts={"A": {"usr": "x"}, "B": {"user": "y"}})
    message = problems(path)
    assert f"{path}: prompts.A.usr: Extra inputs are not permitted" in message


def test_prompt_with_both_inline_and_file_template_is_refused(tmp_path: Path) -> None:
    path = write_eval(
        tmp_path, prompts={"A": {"user": "x", "user_file": "a.txt"}, "B": {"user": "y"}}
    )
    assert f"{path}: prompts.A: give exactly one of user and user_file" in problems(path)


def test_prompt_without_a_model_is_refused(tmp_path: Path) -> None:
    path = write_eval(tmp_path, model=None)
    assert "prompts.A.model: no model" in problems(path)


def test_one_model_per_prompt_compares_models(tmp_path: Path) -> None:
    prompts = {
        "A": {"user": "{text}", "model": "gpt-4o-mini"},
        "B": {"user": "{text}", "model": "gpt-4o"},
    }
    plan = build_plan(write_eval(tmp_path, model=None, prompts=prompts), KEY, {})
    assert (plan.prompts["A"].model, plan.prompts["B"].model) == ("gpt-4o-mini", "gpt-4o")


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text("prompts: [unclosed\n")
    assert f"{path}: not valid YAML" in problems(path)


def test_an_eval_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_bytes(b"model: x\n\xff\n")
    assert f"{path}: not UTF-8 text (byte 9)" in problems(path)


def test_a_template_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_bytes(b"Label \xff")
    prompts = {"A": {"user": "{text}"}, "B": {"user_file": "b.txt"}}
    assert "prompts.B.user_file: b.txt is not UTF-8 text (byte 6)" in problems(
        write_eval(tmp_path, prompts=prompts)
    )


def test_cases_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = write_eval(tmp_path)
    (tmp_path / "cases.json").write_text("[{'id': 1}]")
    assert f"{tmp_path / 'cases.json'}: not valid JSON" in problems(path)


def test_bad_regex_names_cases_file_case_id_and_field(tmp_path: Path) -> None:
    cases = [
        {"id": "ok", "vars": {"text": "a"}},
        {"id": "r7", "vars": {"text": "b"}, "checks": [{"type": "regex", "pattern": "(x"}]},
    ]
    message = problems(write_eval(tmp_path, cases=cases))
    assert (
        f"{tmp_path / 'cases.json'}: case 'r7': checks[0].regex.pattern: bad regular expression"
        in message
    )


def test_bad_schema_names_cases_file_case_id_and_field(tmp_path: Path) -> None:
    cases = [
        {
            "id": "s1",
            "vars": {"text": "b"},
            "checks": [{"type": "json_schema", "schema": {"type": 5}}],
        }
    ]
    message = problems(write_eval(tmp_path, cases=cases))
    assert "case 's1': checks[0].json_schema.schema: bad JSON Schema" in message


def test_case_without_id_is_named_by_position(tmp_path: Path) -> None:
    message = problems(write_eval(tmp_path, cases=[{"id": "a"}, {"vars": {}}]))
    assert "case #2: id: Field required" in message


def test_duplicate_case_ids_are_refused(tmp_path: Path) -> None:
    message = problems(write_eval(tmp_path, cases=[{"id": "a", "vars": {"text": "x"}}] * 2))
    assert "case 'a': id: duplicate id" in message


def test_missing_template_variable_names_case_prompt_and_variable(tmp_path: Path) -> None:
    cases = [{"id": "c1", "vars": {"text": "x"}}, {"id": "c2", "vars": {"txt": "y"}}]
    message = problems(write_eval(tmp_path, cases=cases))
    assert (
        f"{tmp_path / 'cases.json'}: case 'c2': prompts.A.user: missing variable {{text}} "
        "(the case's vars: txt)"
    ) in message
    assert "case 'c2': prompts.B.user: missing variable {text}" in message
    assert "'c1'" not in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    cases = [
        {"id": "a", "checks": [{"type": "regex", "pattern": "["}]},
        {"id": "b", "checks": [{"type": "max_length", "chars": 0}]},
    ]
    with pytest.raises(EvalInputError) as caught:
        build_plan(write_eval(tmp_path, cases=cases), KEY, {})
    assert len(caught.value.problems) == 2


def test_a_bad_case_does_not_hide_another_case_s_missing_variable(tmp_path: Path) -> None:
    cases = [
        {"id": "bad", "vars": {"text": "x"}, "checks": [{"type": "regex", "pattern": "(("}]},
        {"id": "gap", "vars": {}},
    ]
    message = problems(write_eval(tmp_path, cases=cases))
    assert "case 'bad': checks[0].regex.pattern: bad regular expression" in message
    assert "case 'gap': prompts.A.user: missing variable {text}" in message


def test_template_files_are_read_relative_to_the_eval_file(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "b.txt").write_text("Label {text} in one word.")
    prompts = {"A": {"user": "{text}"}, "B": {"user_file": "prompts/b.txt"}}
    plan = build_plan(write_eval(tmp_path, prompts=prompts), KEY, {})
    assert plan.cases[0].messages["B"] == ({"role": "user", "content": "Label hi in one word."},)


def test_missing_variable_in_template_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("{other}")
    prompts = {"A": {"user": "{text}"}, "B": {"user_file": "b.txt"}}
    assert "prompts.B.user_file (b.txt): missing variable {other}" in problems(
        write_eval(tmp_path, prompts=prompts)
    )


def test_missing_template_file_is_named(tmp_path: Path) -> None:
    prompts = {"A": {"user": "{text}"}, "B": {"system_file": "nope.txt", "user": "{text}"}}
    assert "prompts.B.system_file: cannot read nope.txt" in problems(
        write_eval(tmp_path, prompts=prompts)
    )


def test_judge_check_without_judge_model_is_refused(tmp_path: Path) -> None:
    cases = [{"id": "j", "vars": {"text": "x"}, "checks": [{"type": "judge", "rubric": "polite"}]}]
    message = problems(write_eval(tmp_path, cases=cases))
    assert "case 'j': checks[0]: a judge check needs a `judge:` section" in message


def test_prompt_params_override_shared_params_and_json_format_is_expected(tmp_path: Path) -> None:
    prompts = {
        "A": {"user": "{text}"},
        "B": {"user": "{text}", "params": {"response_format": {"type": "json_object"}}},
    }
    params = {"temperature": 0.7, "max_tokens": 10}
    plan = build_plan(write_eval(tmp_path, prompts=prompts, params=params), KEY, {})
    assert plan.prompts["A"].params == params
    assert plan.prompts["B"].params == {**params, "response_format": {"type": "json_object"}}
    assert (plan.prompts["A"].expects_json, plan.prompts["B"].expects_json) == (False, True)


def test_eval_wide_checks_come_before_each_case_s_own(tmp_path: Path) -> None:
    cases = [{"id": "c", "vars": {"text": "x"}, "checks": [{"type": "exact", "value": "x"}]}]
    path = write_eval(tmp_path, cases=cases, checks=[{"type": "max_length", "chars": 5}])
    assert [c.type for c in build_plan(path, KEY, {}).cases[0].checks] == ["max_length", "exact"]


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_an_infinite_timeout_is_named_before_any_request(tmp_path: Path, value: float) -> None:
    path = write_eval(tmp_path, timeout_s=value)
    assert f"{path}: timeout_s: Input should be a finite number" in problems(path)

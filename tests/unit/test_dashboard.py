"""grafana/: the dashboard's shape, variables and metric names; the provisioning files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from gateway.config import parse_config
from gateway.metrics import Metrics
from gateway.runtime import Runtime
from tests.conftest import base_config

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana/dashboards/llm-gateway.json"
REQUIRED_PANELS = {
    "Spend per hour by key",
    "Spend per hour by model",
    "Month-to-date spend by key",
    "Month-to-date spend by model",
    "Projected month-end spend",
    "Tokens per second by type",
    "Request rate by status class",
    "Error rate",
    "Retry and fallback rate",
    "Cache hit ratio",
    "Money saved by the cache per hour",
    "Request latency p50 / p95 / p99",
    "Time to first token p50 / p95 / p99",
    "Gateway overhead p50 / p95 / p99",
    "Budget used % per key",
    "Circuit state",
    "Output anomaly rate",
}
KNOWN_VARIABLES = {"route", "model", "key", "__rate_interval"}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def query_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def exported_names() -> set[str]:
    """Every sample name the gateway can export (counters with _total, histograms' parts)."""
    runtime = Runtime.build(parse_config(base_config("http://127.0.0.1:9"), "<test>"))
    registry = CollectorRegistry()
    Metrics(registry, runtime)
    names = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def test_dashboard_has_every_panel_the_operators_need() -> None:
    titles = {p["title"] for p in query_panels()}
    assert titles >= REQUIRED_PANELS


def test_panels_query_only_metrics_the_gateway_exports() -> None:
    exported = exported_names()
    for panel in query_panels():
        for target in panel["targets"]:
            for name in re.findall(r"llm_gateway_[a-z_]+", target["expr"]):
                assert name in exported, (panel["title"], name)


def test_panels_use_only_the_dashboards_variables() -> None:
    for panel in query_panels():
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"]))
            assert used <= KNOWN_VARIABLES, (panel["title"], used)


def test_a_ratio_filters_what_it_divides_and_what_it_divides_by_alike() -> None:
    """A share whose numerator ignores a variable its denominator applies (or the other way
    round) goes past 100 % once that variable picks one value."""
    for panel in query_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            if " / " not in expr:
                continue
            top, bottom = expr.split(" / ", 1)
            used = [set(re.findall(r"\$(route|model|key)\b", side)) for side in (top, bottom)]
            assert used[0] == used[1], (panel["title"], used)


def test_route_model_and_key_variables_offer_all_as_a_regex() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert set(variables) == {"route", "model", "key"}
    for name, variable in variables.items():
        assert variable["includeAll"] is True
        assert variable["allValue"] == ".*"
        assert f"label_values(llm_gateway_requests_total, {name})" in variable["definition"]


def test_panel_ids_are_unique_and_panels_fit_the_grid_without_overlap() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


def test_panels_use_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus"
    for panel in query_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}
        assert all(t["expr"] and t["refId"] for t in panel["targets"])


def test_dashboard_provider_loads_files_from_a_folder() -> None:
    provider = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/llm-gateway.yaml").read_text()
    )
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"].startswith("/var/lib/grafana/dashboards")
    assert dashboard()["uid"] == "llm-gateway"

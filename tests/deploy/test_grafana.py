"""deploy/grafana: the dashboard parses, shows what an operator looks at first, and every
query uses only metrics Parley exports and is valid PromQL (checked by promtool)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.support import (
    DASHBOARD_FILE,
    DEPLOY,
    METRICS,
    SERIES,
    load_yaml,
    metric_family,
    metric_names,
    run,
    tool,
)

PROVISIONING = DEPLOY / "grafana" / "provisioning"
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "6h",
    "$platform": ".*",
}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return data


def panels(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in data["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    for panel in panels(data):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_dashboard_is_valid_grafana_json() -> None:
    data = dashboard()
    assert data["uid"] == "parley-overview"
    assert data["title"]
    assert isinstance(data["schemaVersion"], int)
    ids = [panel["id"] for panel in panels(data)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(data):
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"


def test_panels_show_traffic_queue_latency_errors_and_tokens_per_channel() -> None:
    by_metric: dict[str, list[str]] = {}
    for title, expr in queries(dashboard()):
        for name in metric_names(expr):
            by_metric.setdefault(metric_family(name), []).append(title)
    # Every exported metric is on the dashboard.
    assert set(by_metric) - {"up"} == METRICS
    tokens = [
        expr
        for _, expr in queries(dashboard())
        if "parley_tokens_generated_total" in expr and re.search(r"by \([^)]*channel", expr)
    ]
    assert tokens, "tokens are shown per channel"
    assert any("histogram_quantile" in e for _, e in queries(dashboard()) if "first_token" in e)


def test_queries_use_only_parley_metrics() -> None:
    data = dashboard()
    for title, expr in queries(data):
        names = metric_names(expr)
        assert names, f"{title}: {expr} selects no series"
        assert names <= SERIES, f"{title} uses unknown series {names - SERIES}"
    for variable in data["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"]
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        assert match, query
        assert match.group(1) in SERIES


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool has no expression checker, so each query becomes a recording rule."""
    promtool = tool("promtool")
    rules = []
    for index, (_, expr) in enumerate(queries(dashboard())):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"parley:dashboard_query_{index}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run([promtool, "check", "rules", str(path)])
    assert f"{len(rules)} rules found" in out


def test_compose_provisions_the_datasource_and_the_dashboard() -> None:
    datasources = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    (prometheus,) = datasources
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    providers = load_yaml(PROVISIONING / "dashboards" / "parley.yml")["providers"]
    (provider,) = providers
    assert provider["type"] == "file"
    # docker-compose.yml mounts deploy/grafana/dashboards there.
    compose = load_yaml(DEPLOY.parent / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts

"""deploy/prometheus: the compose scrape configuration and the alert rules pass promtool,
the alerts fire in the situations they describe (promtool's rule unit tests) and use only
metrics Parley exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import (
    DEPLOY,
    METRICS,
    RULES_FILE,
    SERIES,
    load_yaml,
    metric_family,
    metric_names,
    run,
    tool,
)

PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTS = {
    "ParleyQueueStuck",
    "ParleyModelServerDown",
    "ParleyModelNotGenerating",
    "ParleyErrorRateRising",
    "ParleyFailedAnswersHigh",
    "ParleyQueueWaitHigh",
    "ParleyTargetDown",
}


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES_FILE)["groups"] for rule in group["rules"]]


def test_promql_metric_extraction() -> None:
    """The helper the metric-name checks rely on."""
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(parley_x_seconds_bucket{a="b",c=~"$v"}'
        "[$__rate_interval]))) / on () group_left sum(rate(parley_y_total[5m] offset 1h))"
        " > 3 * (max_over_time(up{job=~'p.*'}[10m:1m]) or on () vector(0)) and topk(10, z)"
    )
    assert metric_names(expr) == {"parley_x_seconds_bucket", "parley_y_total", "up", "z"}


def test_alert_expressions_use_only_parley_metrics() -> None:
    used: set[str] = set()
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']} selects no series"
        assert names <= SERIES, f"{rule['alert']} uses unknown series {names - SERIES}"
        used |= {metric_family(n) for n in names}
    # The three situations the alerts exist for are covered.
    assert {"parley_queue_depth", "parley_answers_total", "parley_model_up"} <= used
    assert {"parley_errors_total", "parley_tokens_generated_total"} <= used
    assert used - {"up"} <= METRICS


def test_alerts_are_named_and_described() -> None:
    assert {rule["alert"] for rule in rules()} == ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def test_promtool_accepts_the_rules() -> None:
    out = run([tool("promtool"), "check", "rules", str(RULES_FILE)])
    assert f"{len(ALERTS)} rules found" in out


def test_promtool_accepts_the_compose_scrape_config(tmp_path: Path) -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    # In the container the rules are mounted at /etc/prometheus/rules; check the same files.
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(RULES_FILE.parent / "*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    out = run([tool("promtool"), "check", "config", str(path)])
    assert "SUCCESS" in out
    assert "rules found" in out
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["parley-bot"]["static_configs"][0]["targets"] == ["bot:3000"]
    (workers,) = jobs["parley-worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"]
    assert workers["port"] == 9400


def test_kubernetes_scrape_config_keeps_parley_pods_by_annotation() -> None:
    """Debian's promtool is built without Kubernetes service discovery, so this file is
    checked by structure: each job keeps its component's pods and honours the
    prometheus.io/port and /path annotations that deploy/k8s puts on them."""
    config = load_yaml(PROMETHEUS_DIR / "kubernetes-scrape.yml")
    for job in config["scrape_configs"]:
        component = job["job_name"].removeprefix("parley-")
        assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
        keeps = {
            tuple(r["source_labels"]): r["regex"]
            for r in job["relabel_configs"]
            if r.get("action") == "keep"
        }
        assert keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_component",)] == component
        targets = {r.get("target_label") for r in job["relabel_configs"]}
        assert {"__address__", "__metrics_path__"} <= targets


# Situations and what must (or must not) fire at which minute, as promtool rule unit tests;
# "labels" are those the firing alert carries beyond its severity. One sample a minute;
# promtool's series notation: "a+bxN" is N+1 samples from a, step b.
SCENARIOS: list[dict[str, Any]] = [
    {
        "name": "queued messages and no answers for 5 minutes: stuck",
        "series": {
            'parley_queue_depth{job="parley-bot"}': "3x20",
            'parley_answers_total{platform="slack",outcome="answered"}': "10x20",
        },
        "expect": {"ParleyQueueStuck": [(8, True)]},
    },
    {
        "name": "queue stuck before any answer was ever counted",
        "series": {'parley_queue_depth{job="parley-bot"}': "2x20"},
        "expect": {"ParleyQueueStuck": [(3, True)]},
    },
    {
        "name": "a busy queue that is moving is not stuck",
        "series": {
            'parley_queue_depth{job="parley-bot"}': "5x30",
            'parley_answers_total{platform="slack",outcome="answered"}': "0+2x30",
            'parley_tokens_generated_total{platform="slack",channel="C1"}': "0+100x30",
        },
        "expect": {"ParleyQueueStuck": [(20, False)], "ParleyModelNotGenerating": [(20, False)]},
    },
    {
        "name": "an empty queue is not stuck",
        "series": {
            'parley_queue_depth{job="parley-bot"}': "0x20",
            'parley_answers_total{platform="slack",outcome="answered"}': "7x20",
        },
        "expect": {"ParleyQueueStuck": [(15, False)]},
    },
    {
        "name": "workers cannot reach TGI",
        "series": {
            'parley_model_up{instance="w1:9400",job="parley-worker"}': "1 1 0x10",
            'parley_model_up{instance="w2:9400",job="parley-worker"}': "1 1 0x10",
        },
        "expect": {"ParleyModelServerDown": [(3, False), (6, True)]},
    },
    {
        "name": "TGI reachable from one worker is not down",
        "series": {
            'parley_model_up{instance="w1:9400",job="parley-worker"}': "0x10",
            'parley_model_up{instance="w2:9400",job="parley-worker"}': "1x10",
        },
        "expect": {"ParleyModelServerDown": [(6, False)]},
    },
    {
        "name": "no tokens while the queue grows: the model server is dead",
        "series": {
            'parley_queue_depth{job="parley-bot"}': "0+1x30",
            'parley_tokens_generated_total{platform="slack",channel="C1"}': "500x30",
            'parley_model_up{job="parley-worker"}': "1x30",
        },
        "expect": {"ParleyModelNotGenerating": [(15, True)]},
    },
    {
        "name": "errors rise well above the hour before",
        "series": {
            'parley_errors_total{kind="model"}': "0+1x60 60+10x40",
            'parley_answers_total{platform="slack",outcome="answered"}': "0+20x100",
        },
        "expect": {"ParleyErrorRateRising": [(55, False), (85, True)]},
    },
    {
        "name": "a steady error rate is not rising",
        "series": {'parley_errors_total{kind="model"}': "0+6x100"},
        "expect": {"ParleyErrorRateRising": [(90, False)]},
    },
    {
        "name": "one answer in four fails",
        "series": {
            'parley_answers_total{platform="slack",outcome="answered"}': "0+3x40",
            'parley_answers_total{platform="slack",outcome="failed"}': "0+1x40",
        },
        "expect": {"ParleyFailedAnswersHigh": [(25, True)]},
    },
    {
        "name": "messages wait about a minute in the queue",
        "series": {
            'parley_queue_wait_seconds_bucket{le="1"}': "0x40",
            'parley_queue_wait_seconds_bucket{le="10"}': "0x40",
            'parley_queue_wait_seconds_bucket{le="60"}': "0+1x40",
            'parley_queue_wait_seconds_bucket{le="+Inf"}': "0+1x40",
        },
        "expect": {"ParleyQueueWaitHigh": [(25, True)]},
    },
    {
        "name": "a worker stops answering scrapes",
        "series": {'up{job="parley-worker",instance="w1:9400"}': "1 1 0x10"},
        "expect": {"ParleyTargetDown": [(3, False), (6, True)]},
        "labels": {"job": "parley-worker", "instance": "w1:9400"},
    },
]


def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    promtool = tool("promtool")
    # promtool compares annotations too; their templates are checked by `check rules`,
    # here only the conditions matter.
    stripped = load_yaml(RULES_FILE)
    for group in stripped["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(stripped))
    severities = {rule["alert"]: rule["labels"] for rule in rules()}
    tests = []
    for scenario in SCENARIOS:
        checks = []
        for alert, points in scenario["expect"].items():
            for minute, fires in points:
                labels = {**severities[alert], **scenario.get("labels", {})}
                exp = [{"exp_labels": labels}] if fires else []
                checks.append({"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": exp})
        tests.append(
            {
                "name": scenario["name"],
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in scenario["series"].items()],
                "alert_rule_test": checks,
            }
        )
    covered = {alert for s in SCENARIOS for alert, points in s["expect"].items() if points}
    assert covered == ALERTS
    (tmp_path / "alerts_test.yml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests})
    )
    run([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path)


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_each_alert_has_a_scenario_where_it_fires(alert: str) -> None:
    assert any(fires for s in SCENARIOS for _, fires in s["expect"].get(alert, [])), (
        f"no scenario shows {alert} firing"
    )

"""The dashboard and the alert rules only use metrics that smsmta defines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase
from ruamel.yaml import YAML

from smsmta import obs

CONFIG = Path(__file__).resolve().parents[2] / "config"
NAME = re.compile(r"\bsmsmta_[a-z0-9_]+")
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def defined() -> dict[str, str]:
    """Metric name -> type, for every metric of smsmta.obs."""
    metrics = {}
    for value in vars(obs).values():
        if isinstance(value, MetricWrapperBase):
            metrics[value._name] = value._type
    return metrics


def base_name(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def used_in(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in NAME.findall(expr)}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((CONFIG / "grafana" / "dashboards" / "smsmta.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_expressions() -> list[str]:
    rules = YAML(typ="safe").load((CONFIG / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_used_is_defined_with_its_type(source: str) -> None:
    expressions = dashboard_expressions() if source == "dashboard" else alert_expressions()
    metrics = defined()
    for name in used_in(expressions):
        base = base_name(name)
        assert base in metrics, f"{source} uses {name}, which smsmta does not define"
        kind = metrics[base]
        if name.endswith("_bucket"):
            assert kind == "histogram", name
        if name.endswith("_total"):
            assert kind == "counter", name
        if kind == "counter":
            assert name.endswith("_total"), f"{name}: a counter is exposed as {base}_total"


def test_the_dashboard_shows_what_operators_need() -> None:
    titles = {
        panel["title"]
        for panel in json.loads((CONFIG / "grafana" / "dashboards" / "smsmta.json").read_text())[
            "panels"
        ]
    }
    for wanted in (
        "MT rate against the cap, per account",
        "Window occupancy",
        "Submit latency p50 / p99",
        "Responses by status",
        "Receipts by stat",
        "Unmatched receipts",
        "Queue depth",
        "Age of the oldest due message",
        "Binds up",
        "Reconnects",
    ):
        assert wanted in titles


def test_prometheus_scrapes_every_service_at_its_default_port() -> None:
    config = YAML(typ="safe").load((CONFIG / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]
    }
    assert targets == {
        "smsmta-mid": "127.0.0.1:9100",
        "smsmta-mta": "127.0.0.1:9101",
        "smsmta-sms-process": "127.0.0.1:9102",
        "smsmta-marketing": "127.0.0.1:9104",
    }
    assert config["rule_files"] == ["alerts.yml"]


def test_promtool_accepts_the_rules_and_the_configuration() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install Debian's prometheus package (./run tests does)"
    result = subprocess.run(
        [promtool, "check", "config", str(CONFIG / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr

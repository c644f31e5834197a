"""deploy/prometheus/rules.yaml: the chart carries it verbatim; every expression parses with a
real PromQL parser (promql-parser, the Rust parser's Python binding); every metric it reads is
one the gateway exports (server/metrics.py), a rule it records, or kube-state-metrics'; and, when
promtool is installed, `promtool check rules` and the unit tests in prometheus_rules_test.yaml
pass (each alert fires on its traffic and stays quiet on normal traffic)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.k8s import ROOT, RULE_GROUPS_SCHEMA

RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
CHART_COPY = ROOT / "helm" / "thoughtguard" / "files" / "prometheus-rules.yaml"
UNIT_TESTS = Path(__file__).with_name("prometheus_rules_test.yaml")
# Read from kube-state-metrics, not from the gateway.
EXTERNAL_METRICS = {"kube_pod_container_status_ready", "ALERTS"}


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    jsonschema.validate(doc, RULE_GROUPS_SCHEMA)
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _metric_labels() -> dict[str, set[str]]:
    """Series name -> label names, from the gateway's collectors (prometheus_client keeps a
    labelled family's label names on the collector; samples exist only once a label set is used)."""
    from server.metrics import Metrics

    m = Metrics()
    out: dict[str, set[str]] = {}
    for collector in vars(m).values():
        name = getattr(collector, "_name", None)
        if name is None:
            continue
        labels = set(collector._labelnames)
        typ = collector._type
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(typ, [""])
        for s in suffixes:
            out[name + s] = labels | ({"le"} if s == "_bucket" else set())
    assert out.get("thoughtguard_requests_total") == {"model", "outcome"}, "collectors not found"
    return out


def _selectors(expr: str) -> list[Any]:
    import promql_parser

    found: list[Any] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_chart_carries_the_rules_verbatim() -> None:
    assert CHART_COPY.read_bytes() == RULES.read_bytes(), (
        "cp deploy/prometheus/rules.yaml helm/thoughtguard/files/prometheus-rules.yaml"
    )


def test_required_rules_exist() -> None:
    rules = _rules()
    records = {r["record"]: r for r in rules if "record" in r}
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    refusal = records["thoughtguard:refusal_rate:ratio_rate5m"]["expr"]
    assert 'thoughtguard_guard_decisions_total{action="block"}[5m]' in refusal
    assert "thoughtguard_requests_total[5m]" in refusal
    assert {
        "ThoughtguardRefusalRateSpike",
        "ThoughtguardGuardFailOpen",
        "ThoughtguardTTFTOverBudget",
        "ThoughtguardUpstreamDown",
    } <= set(alerts)
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name


def test_every_expression_parses_and_reads_real_metrics() -> None:
    from server.metrics import OUTCOMES

    exported = _metric_labels()
    rules = _rules()
    recorded = {r["record"] for r in rules if "record" in r}
    for rule in rules:
        where = rule.get("record") or rule.get("alert")
        for sel in _selectors(rule["expr"]):
            name = sel.name
            assert name in exported or name in recorded or name in EXTERNAL_METRICS, (
                f"{where}: {name} is neither exported by server/metrics.py nor recorded here"
            )
            for m in sel.matchers.matchers:
                if name in exported:
                    assert m.name in exported[name], f"{where}: {name} has no label {m.name}"
                if m.name == "outcome":
                    assert m.value in OUTCOMES, f"{where}: outcome={m.value} is never exported"
                if m.name == "action":
                    assert m.value in ("block", "steer", "flag"), f"{where}: action={m.value}"
                if m.name == "mode" and name.startswith("thoughtguard_guard_fail"):
                    assert m.value in ("open", "closed"), f"{where}: mode={m.value}"


def _promtool() -> str | None:
    return os.environ.get("PROMTOOL") or shutil.which("promtool")


def test_promtool_check_rules() -> None:
    promtool = _promtool()
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus; or set PROMTOOL)")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests() -> None:
    promtool = _promtool()
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus; or set PROMTOOL)")
    out = subprocess.run(
        [promtool, "test", "rules", UNIT_TESTS.name], capture_output=True, text=True, timeout=120,
        cwd=UNIT_TESTS.parent, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr

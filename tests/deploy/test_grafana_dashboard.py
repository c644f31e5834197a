"""deploy/grafana/thoughtguard.json: valid dashboard JSON whose every query parses with a real
PromQL parser and reads only series the gateway exports (vLLM's own series are checked against a
live vLLM in tests/e2e/test_metrics.py)."""

from __future__ import annotations

import json
from typing import Any

from tests.deploy.k8s import ROOT
from tests.deploy.test_prometheus_rules import _metric_labels, _selectors

DASHBOARD = ROOT / "deploy" / "grafana" / "thoughtguard.json"
VLLM_SERIES = {"vllm:num_requests_running", "vllm:num_requests_waiting"}


def _targets() -> list[dict[str, Any]]:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "thoughtguard" and dash["panels"]
    return [t for p in dash["panels"] for t in p["targets"]]


def test_every_query_parses_and_reads_existing_series() -> None:
    series = _metric_labels()
    seen: set[str] = set()
    for target in _targets():
        expr = target["expr"].replace("$model", "x")
        for sel in _selectors(expr):
            name = sel.name
            seen.add(name)
            if name in VLLM_SERIES:
                continue
            assert name in series, f"{name} is not exported by server/metrics.py"
            for matcher in sel.matchers.matchers:
                assert matcher.name in series[name], f"{name} has no label {matcher.name}"
    # the panels the observability issue asks for
    for needed in [
        "thoughtguard_requests_total",
        "thoughtguard_guard_decisions_total",
        "thoughtguard_time_to_first_token_seconds_bucket",
        "thoughtguard_inter_token_latency_seconds_bucket",
        "thoughtguard_holdback_delay_seconds_bucket",
        "thoughtguard_guard_check_duration_seconds_bucket",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
    ]:
        assert needed in seen, needed


def test_panels_do_not_overlap() -> None:
    dash = json.loads(DASHBOARD.read_text())
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))

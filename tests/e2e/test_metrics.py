"""Metrics and the audit log after real requests (benign, blocked, steered, flagged, image)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import CONVERSATIONS, FIGSTEP_IMAGES, free_port, image_data_url, user_message

pytestmark = pytest.mark.vllm

AUDIT_SCHEMA = {
    "type": "object",
    "required": ["time", "event", "request_id", "model"],
    "properties": {
        "event": {"enum": ["decision", "request"]},
        "time": {"type": "string"},
        "request_id": {"type": "string"},
        "model": {"type": "string"},
    },
    "allOf": [
        {"if": {"properties": {"event": {"const": "decision"}}},
         "then": {"required": ["action", "stage", "category", "score", "position", "detector", "reason"],
                  "properties": {"action": {"enum": ["block", "steer", "flag"]},
                                 "stage": {"enum": ["prompt", "reasoning", "answer"]},
                                 "score": {"type": "number"}, "position": {"type": "integer"}}}},
        {"if": {"properties": {"event": {"const": "request"}}},
         "then": {"required": ["outcome", "prompt_tokens", "completion_tokens", "latency_s", "images", "checks"],
                  "properties": {"outcome": {"enum": ["ok", "blocked", "steered", "flagged", "client_error",
                                                      "upstream_error", "cancelled"]}}}},
    ],
}


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def chat(base: str, model: str, conv_id: str, rid: str, stream: bool = True) -> httpx.Response:
    conv = CONVERSATIONS[conv_id]
    image = image_data_url(sorted(FIGSTEP_IMAGES.glob("*.png"))[0]) if conv.get("image") else None
    body = {"model": model, "messages": user_message(conv, image), "temperature": 0, "max_tokens": 256,
            "stream": stream}
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers={"X-Request-Id": rid}, timeout=120)


@pytest.fixture(scope="module")
def audited(gateway_factory: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    return gateway_factory(audit={"path": str(path)}), path


def test_counters_move_exactly(audited: tuple[str, Path], served_model: str, vllm_url: str) -> None:
    base, _ = audited
    m = served_model
    b = scrape(base)
    assert chat(base, m, "benign", "m-benign").status_code == 200
    a = scrape(base)
    assert delta(b, a, "thoughtguard_requests_total", model=m, outcome="ok") == 1
    assert delta(b, a, "thoughtguard_time_to_first_token_seconds_count", model=m) == 1
    assert delta(b, a, "thoughtguard_time_to_first_answer_token_seconds_count", model=m) == 1
    assert delta(b, a, "thoughtguard_e2e_request_latency_seconds_count", model=m) == 1
    assert delta(b, a, "thoughtguard_upstream_connect_seconds_count", model=m) == 1
    assert delta(b, a, "thoughtguard_inter_token_latency_seconds_count", model=m) >= 1
    conv = CONVERSATIONS["benign"]
    # every released token waited in the guard once: reasoning and answer tokens of the stream
    assert delta(b, a, "thoughtguard_holdback_delay_seconds_count", model=m) >= 20
    checks = [k for k in a if k[0] == "thoughtguard_guard_check_duration_seconds_count"]
    assert sum(delta(b, a, k[0], **dict(k[1])) for k in checks) >= 2
    assert not any(k[0] == "thoughtguard_guard_decisions_total" and delta(b, a, k[0], **dict(k[1])) for k in a)
    assert a[("thoughtguard_requests_in_flight", (("model", m),))] == 0
    assert conv["answer"]

    b = scrape(base)
    assert chat(base, m, "unsafe_reasoning", "m-blocked").status_code == 200
    a = scrape(base)
    assert delta(b, a, "thoughtguard_requests_total", model=m, outcome="blocked") == 1
    blocks = [k for k in a if k[0] == "thoughtguard_guard_decisions_total" and dict(k[1])["action"] == "block"]
    assert sum(delta(b, a, k[0], **dict(k[1])) for k in blocks) == 1
    assert all(dict(k[1])["stage"] == "reasoning" for k in blocks if delta(b, a, k[0], **dict(k[1])))
    assert delta(b, a, "thoughtguard_detection_position_tokens_count", model=m, stage="reasoning") == 1
    assert delta(b, a, "thoughtguard_upstream_tokens_saved_total", model=m) > 100  # max_tokens 256

    b = scrape(base)
    assert chat(base, m, "benign_image", "m-image", stream=False).status_code == 200
    bad = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={"model": m, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]})
    assert bad.status_code == 400
    a = scrape(base)
    assert delta(b, a, "thoughtguard_images_total", model=m, format="PNG") == 1
    assert delta(b, a, "thoughtguard_image_bytes_total", model=m) == sorted(FIGSTEP_IMAGES.glob("*.png"))[0].stat().st_size
    assert delta(b, a, "thoughtguard_image_rejections_total", model=m, reason="undecodable") == 1
    assert delta(b, a, "thoughtguard_requests_total", model=m, outcome="client_error") == 1
    assert delta(b, a, "thoughtguard_requests_total", model=m, outcome="ok") == 1


@pytest.mark.parametrize("action,outcome", [("flag", "flagged"), ("steer", "steered")])
def test_flag_and_steer_outcomes(action: str, outcome: str, gateway_factory: Callable[..., str],
                                 tmp_path_factory: pytest.TempPathFactory, served_model: str) -> None:
    policy = tmp_path_factory.mktemp("p") / f"{action}.yaml"
    answer = "flag" if action == "flag" else "block"
    policy.write_text(yaml.safe_dump({"actions": {"prompt": "allow", "reasoning": action, "answer": answer}}))
    base = gateway_factory(guard={"policy_file": str(policy)})
    b = scrape(base)
    assert chat(base, served_model, "unsafe_reasoning", f"m-{action}").status_code == 200
    a = scrape(base)
    assert delta(b, a, "thoughtguard_requests_total", model=served_model, outcome=outcome) == 1
    acts = [k for k in a if k[0] == "thoughtguard_guard_decisions_total"
            and dict(k[1])["action"] == action and dict(k[1])["stage"] == "reasoning"]
    assert sum(delta(b, a, k[0], **dict(k[1])) for k in acts) == 1


def tier_counts(before: dict, after: dict, name: str, model: str) -> dict[str, float]:
    """How much ``name`` moved per ``detector`` label."""
    out: dict[str, float] = {}
    for key in after:
        labels = dict(key[1])
        if key[0] == name and labels.get("model") == model and "detector" in labels:
            out[labels["detector"]] = delta(before, after, name, **labels)
    return {k: v for k, v in out.items() if v}


def test_check_duration_is_labelled_per_cascade_tier(
    gateway_factory: Callable[..., str], vllm_url: str, served_model: str
) -> None:
    # the tiny model answers every Qwen3Guard-Gen prompt "Safety: Safe": an always-escalating
    # cascade runs both tiers on every window and lets the benign stream through
    base = gateway_factory(guard={"guard_model": {
        "url": f"{vllm_url}/v1", "model": served_model, "format": "qwen3guard_gen", "escalate": "always"}})
    m = served_model
    b = scrape(base)
    assert chat(base, m, "benign", "m-tiers").status_code == 200
    a = scrape(base)
    counts = tier_counts(b, a, "thoughtguard_guard_check_duration_seconds_count", m)
    assert set(counts) == {"intent", "qwen3guard_gen"}  # never the composite name
    assert counts["intent"] == counts["qwen3guard_gen"] >= 2
    seconds = tier_counts(b, a, "thoughtguard_guard_check_duration_seconds_sum", m)
    assert seconds["qwen3guard_gen"] > seconds["intent"]  # a model call vs. in-process scoring
    assert not tier_counts(b, a, "thoughtguard_guard_errors_total", m)


def test_guard_errors_are_labelled_with_the_failing_tier(
    gateway_factory: Callable[..., str], tmp_path_factory: pytest.TempPathFactory, served_model: str
) -> None:
    policy = tmp_path_factory.mktemp("p") / "open.yaml"
    policy.write_text(yaml.safe_dump({"failure": {"mode": "open", "timeout_s": 2.0}}))
    base = gateway_factory(guard={"policy_file": str(policy), "guard_model": {
        "url": f"http://127.0.0.1:{free_port()}/v1", "format": "llama_guard_3", "escalate": "always", "timeout_s": 1.0}})
    m = served_model
    b = scrape(base)
    assert chat(base, m, "benign", "m-tier-errors").status_code == 200  # fail-open: the stream goes on
    a = scrape(base)
    errors = tier_counts(b, a, "thoughtguard_guard_errors_total", m)
    checks = tier_counts(b, a, "thoughtguard_guard_check_duration_seconds_count", m)
    assert set(errors) == {"llama_guard_3"} and errors["llama_guard_3"] == checks["llama_guard_3"] >= 2
    assert checks["intent"] == checks["llama_guard_3"]
    assert delta(b, a, "thoughtguard_guard_fail_activations_total", model=m, mode="open") == errors["llama_guard_3"]


def test_audit_log_lines_validate_and_hold_no_text(audited: tuple[str, Path], served_model: str) -> None:
    base, path = audited
    assert chat(base, served_model, "unsafe_reasoning", "audit-1").status_code == 200
    deadline = time.monotonic() + 5
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        if any(x["request_id"] == "audit-1" and x["event"] == "request" for x in lines):
            break
        time.sleep(0.1)
    mine = [x for x in lines if x["request_id"] == "audit-1"]
    assert {x["event"] for x in mine} == {"decision", "request"}
    for line in lines:
        jsonschema.validate(line, AUDIT_SCHEMA)
        assert "window" not in line and "prompt" not in line and "content" not in line
    text = path.read_text()
    conv = CONVERSATIONS["unsafe_reasoning"]
    assert conv["prompt"] not in text and "steel pipe" not in text


def test_vllm_series_used_by_the_dashboard_exist(vllm_url: str) -> None:
    names = {fam.name for fam in text_string_to_metric_families(httpx.get(f"{vllm_url}/metrics").text)}
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting"} <= names

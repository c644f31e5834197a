"""Guard actions end to end through the real vLLM tiny model: block, steer, flag, collapse, guard-model tier."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import httpx
import openai
import pytest
import yaml

from guard.policy import DEFAULT_POLICY_PATH, Policy
from tests.support import (
    CONVERSATIONS,
    FIGSTEP_IMAGES,
    SCRIPTED,
    free_port,
    image_data_url,
    stream_collect,
    user_message,
    wait_running_zero,
)

pytestmark = pytest.mark.vllm


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)


def policy_file(tmp: Path, name: str, **overrides: Any) -> str:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(overrides))
    return str(path)


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("policies")
    return {
        "steer": policy_file(tmp, "steer", actions={"prompt": "allow", "reasoning": "steer", "answer": "block"}),
        "flag": policy_file(tmp, "flag", actions={"prompt": "allow", "reasoning": "flag", "answer": "flag"}),
        "open": policy_file(tmp, "open", failure={"mode": "open", "timeout_s": 2.0}),
        "lookahead": policy_file(tmp, "lookahead", **with_thresholds(lookahead_windows=4)),
        "wary": policy_file(tmp, "wary", **with_thresholds(wary=0.0)),
        "strict": policy_file(tmp, "strict", **with_thresholds(unsafe=0.95)),
    }


def with_thresholds(**changes: Any) -> dict[str, Any]:
    """The default policy with some thresholds changed (the opt-in hold-back rules)."""
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data["thresholds"].update(changes)
    return data


def run(base: str, model: str, conv_id: str, **kw: Any) -> dict[str, Any]:
    conv = CONVERSATIONS[conv_id]
    image = image_data_url(sorted(FIGSTEP_IMAGES.glob("*.png"))[0]) if conv.get("image") else None
    stream = client(base).chat.completions.create(
        model=model, messages=user_message(conv, image), temperature=0, max_tokens=512, stream=True, **kw
    )
    return stream_collect(stream)


def test_steer_continues_from_verified_reasoning(
    gateway_factory: Callable[..., str], policies: dict[str, str], served_model: str, vllm_url: str
) -> None:
    base = gateway_factory(guard={"policy_file": policies["steer"]})
    conv = CONVERSATIONS["unsafe_reasoning"]
    got = run(base, served_model, "unsafe_reasoning")
    assert got["finish_reason"] == "stop", got
    ext = got["thoughtguard"]
    assert ext["action"] == "steer" and ext["stage"] == "reasoning"
    # the client saw the verified start of the thought, the reflection, then the model's own safe continuation
    assert SCRIPTED["reflection"].strip() in got["reasoning"]
    before = got["reasoning"].split(SCRIPTED["reflection"].strip())[0].strip()
    assert conv["reasoning"].startswith(before)
    assert "black powder" not in got["reasoning"]
    assert conv["steer_continuation"].strip() in got["reasoning"]
    assert got["content"].strip() == conv["steer_answer"]
    wait_running_zero(vllm_url, within=2.0)


def test_flag_annotates_without_blocking(
    gateway_factory: Callable[..., str], policies: dict[str, str], served_model: str
) -> None:
    base = gateway_factory(guard={"policy_file": policies["flag"]})
    conv = CONVERSATIONS["unsafe_reasoning"]
    got = run(base, served_model, "unsafe_reasoning")
    assert got["finish_reason"] == "stop"
    assert got["reasoning"].strip() == conv["reasoning"] and got["content"].strip() == conv["answer"]
    ext = got["thoughtguard"]
    assert ext["action"] == "flag" and ext["flags"] and ext["flags"][0]["action"] == "flag"


def test_unsafe_thought_is_cut_at_its_onset_window_and_nothing_after_the_onset_shows(
    gateway_url: str, served_model: str, vllm_url: str
) -> None:
    conv = CONVERSATIONS["unsafe_reasoning"]
    got = run(gateway_url, served_model, "unsafe_reasoning")
    assert got["finish_reason"] == "content_filter"
    ext = got["thoughtguard"]
    assert ext["action"] == "block" and ext["stage"] == "reasoning"
    shown = got["reasoning"]
    # nothing from the onset on reached the client: the windows that read doubtful were held back
    assert conv["reasoning"].startswith(shown.strip()) and len(shown.strip()) <= conv["onset"]
    # cut before the held stretch would have been released (`hold_max_tokens` past the onset); at the
    # shipped `unsafe` (0.998) this script's onset window reads 0.995, so the cut comes a few windows
    # later, which is the timeliness the model card reports as not yet met
    th = Policy.load().thresholds
    onset_tokens = len(conv["reasoning"][: conv["onset"]].split())
    assert ext["position"] <= onset_tokens + th.hold_max_tokens + 16
    wait_running_zero(vllm_url, within=2.0)


def test_self_flagged_reasoning_then_compliant_answer_is_blocked(gateway_url: str, served_model: str) -> None:
    conv = CONVERSATIONS["collapse"]
    got = run(gateway_url, served_model, "collapse")
    # the thought that recognised the harm is safe and streams whole; the compliant answer is cut
    assert got["reasoning"].strip() == conv["reasoning"]
    assert got["finish_reason"] == "content_filter"
    ext = got["thoughtguard"]
    assert ext["action"] == "block" and ext["stage"] == "answer"
    assert "tension wrench" not in got["content"]


def test_a_refusal_thought_streams_window_by_window(gateway_url: str, served_model: str) -> None:
    conv = CONVERSATIONS["refuses"]  # a harmful request, a safe refusal: not held back for its request
    got = run(gateway_url, served_model, "refuses")
    assert got["finish_reason"] == "stop" and got["thoughtguard"] is None
    assert got["reasoning"].strip() == conv["reasoning"] and got["content"].strip() == conv["answer"]
    assert got["order"].count("reasoning") > 1


def test_a_legitimate_request_on_an_alarming_topic_is_answered(gateway_url: str, served_model: str) -> None:
    conv = CONVERSATIONS["benign_sensitive"]
    got = run(gateway_url, served_model, "benign_sensitive")
    assert got["finish_reason"] == "stop" and got["thoughtguard"] is None
    assert got["reasoning"].strip() == conv["reasoning"] and got["content"].strip() == conv["answer"]
    assert got["order"].count("reasoning") > 1


def test_opt_in_hold_back_rules_hold_what_they_say(
    gateway_url: str, gateway_factory: Callable[..., str], policies: dict[str, str], served_model: str
) -> None:
    conv = CONVERSATIONS["benign"]  # a short thought: fewer windows than a lookahead of 4
    plain = run(gateway_url, served_model, "benign")
    ahead = run(gateway_factory(guard={"policy_file": policies["lookahead"]}), served_model, "benign")
    wary = run(gateway_factory(guard={"policy_file": policies["wary"]}), served_model, "refuses")
    for got, c in ((plain, conv), (ahead, conv), (wary, CONVERSATIONS["refuses"])):
        assert got["finish_reason"] == "stop" and got["thoughtguard"] is None
        assert got["reasoning"].strip() == c["reasoning"] and got["content"].strip() == c["answer"]
    assert plain["order"].count("reasoning") > 1  # the default: window by window
    assert ahead["order"] == ["reasoning", "answer"]  # held until the stream ended
    assert wary["order"] == ["reasoning", "answer"]  # a wary stream arrives whole once all checked


def test_a_held_stream_gets_keepalive_comments_that_the_sdk_skips(
    gateway_factory: Callable[..., str], served_model: str
) -> None:
    base = gateway_factory(sse_keepalive_s=1e-6)  # so an upstream event that sends nothing is followed by one
    conv = CONVERSATIONS["refuses"]
    hidden = {"thoughtguard": {"mode": "hidden"}}  # the thought is checked but never sent: the stream is silent
    body = {"model": served_model, "messages": user_message(conv), "temperature": 0, "max_tokens": 512,
            "stream": True, **hidden}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    first_text = next(i for i, ln in enumerate(lines) if re.search(r'"content":\s*"[^"]', ln))
    assert ": keep-alive" in lines[:first_text]  # however the upstream chunked the thought
    assert not any('"reasoning"' in ln for ln in lines)
    assert lines[-1] == "data: [DONE]"
    got = run(base, served_model, "refuses", extra_body=hidden)  # the openai SDK reads the same stream whole
    assert got["finish_reason"] == "stop" and got["reasoning"] == ""
    assert got["content"].strip() == conv["answer"]


def test_image_jailbreak_read_out_in_reasoning_is_blocked(
    gateway_factory: Callable[..., str], policies: dict[str, str], served_model: str
) -> None:
    """The image path end to end: an image request whose thought reads out and follows the harm in the
    image is cut in the thought. The script's plan reads 0.988 at its worst window, just under the
    shipped `unsafe` (0.995): image-borne thoughts are the reader's weakest kind (model card: 77 % on
    dev), so this test holds the path to a stricter policy instead of pretending the default catches it."""
    conv = CONVERSATIONS["image_jailbreak"]
    got = run(gateway_factory(guard={"policy_file": policies["strict"]}), served_model, "image_jailbreak")
    assert got["finish_reason"] == "content_filter"
    assert got["thoughtguard"]["stage"] == "reasoning"
    assert "red phosphorus" not in got["reasoning"] + got["content"]
    assert conv["reasoning"].startswith(got["reasoning"].strip())


def test_guard_model_tier_llama_guard_blocks(
    gateway_factory: Callable[..., str], vllm_url: str, served_model: str
) -> None:
    # the tiny model was trained to answer every Llama Guard 3 prompt with "unsafe\nS9"
    base = gateway_factory(guard={"guard_model": {
        "url": f"{vllm_url}/v1", "model": served_model, "format": "llama_guard_3", "escalate": "always"}})
    got = run(base, served_model, "benign")
    assert got["finish_reason"] == "content_filter"
    assert got["thoughtguard"]["category"] == "S9"
    assert got["thoughtguard"]["detector"] == "llama_guard_3"
    assert got["reasoning"] == ""  # the first window was already refused by the guard model


def test_guard_model_tier_qwen3guard_allows(
    gateway_factory: Callable[..., str], vllm_url: str, served_model: str
) -> None:
    # ...and every Qwen3Guard-Gen prompt with "Safety: Safe": the slow tier overrides the fast one
    base = gateway_factory(guard={"guard_model": {
        "url": f"{vllm_url}/v1", "model": served_model, "format": "qwen3guard_gen", "escalate": "always"}})
    conv = CONVERSATIONS["benign"]
    got = run(base, served_model, "benign")
    assert got["finish_reason"] == "stop"
    assert got["reasoning"].strip() == conv["reasoning"]


@pytest.mark.parametrize("policy,expect", [(None, "content_filter"), ("open", "stop")])
def test_guard_model_down_fails_closed_by_default(
    policy: str | None, expect: str, gateway_factory: Callable[..., str], policies: dict[str, str], served_model: str
) -> None:
    guard: dict[str, Any] = {"guard_model": {
        "url": f"http://127.0.0.1:{free_port()}/v1", "format": "llama_guard_3", "escalate": "always", "timeout_s": 1.0}}
    if policy:
        guard["policy_file"] = policies[policy]
    got = run(gateway_factory(guard=guard), served_model, "benign")
    assert got["finish_reason"] == expect
    if expect == "content_filter":
        assert got["thoughtguard"]["reason"] == "detector_error"


def test_hidden_mode_per_request_sends_no_reasoning(gateway_url: str, served_model: str) -> None:
    conv = CONVERSATIONS["benign"]
    got = run(gateway_url, served_model, "benign", extra_body={"thoughtguard": {"mode": "hidden"}})
    assert got["reasoning"] == ""
    assert got["content"].strip() == conv["answer"] and got["finish_reason"] == "stop"


def test_live_mode_forwards_at_once_and_counts_the_leak(gateway_factory: Callable[..., str], served_model: str) -> None:
    import httpx

    base = gateway_factory(guard={"mode": "live"})
    got = run(base, served_model, "unsafe_reasoning")
    assert got["finish_reason"] == "content_filter"
    metrics = httpx.get(f"{base}/metrics").text
    leaked = [ln for ln in metrics.splitlines() if ln.startswith("thoughtguard_live_leaked_tokens_total{")]
    assert leaked and float(leaked[0].split()[-1]) > 0

"""The optional prompt-side check: a blocked prompt never reaches the upstream."""

from __future__ import annotations

from typing import Callable

import httpx
import pytest
import yaml

from tests.support import CONVERSATIONS, user_message

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def strict_prompt_policy(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("pp") / "prompt.yaml"
    path.write_text(yaml.safe_dump({"thresholds": {"unsafe": 0.5}, "actions": {"prompt": "block"}}))
    return str(path)


def requests_to(vllm_url: str) -> float:
    text = httpx.get(f"{vllm_url}/metrics").text
    return sum(float(ln.split()[-1]) for ln in text.splitlines()
               if ln.startswith("vllm:request_success_total{") or ln.startswith("vllm:num_requests_running{"))


@pytest.mark.parametrize("response", ["refusal", "error"])
def test_blocked_prompt_is_answered_without_the_upstream(
    response: str, gateway_factory: Callable[..., str], strict_prompt_policy: str, served_model: str, vllm_url: str
) -> None:
    base = gateway_factory(guard={"policy_file": strict_prompt_policy, "prompt_check": True,
                                  "prompt_block_response": response})
    conv = CONVERSATIONS["unsafe_reasoning"]
    before = requests_to(vllm_url)
    r = httpx.post(f"{base}/v1/chat/completions", timeout=60,
                   json={"model": served_model, "messages": user_message(conv), "max_tokens": 64})
    if response == "refusal":
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "content_filter"
        assert choice["thoughtguard"]["stage"] == "prompt" and choice["thoughtguard"]["action"] == "block"
        assert choice["message"]["content"] == choice["message"]["refusal"]
        assert r.json()["usage"]["completion_tokens"] == 0
    else:
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "content_filter"
    assert requests_to(vllm_url) == before  # vLLM never saw it
    # a benign prompt still goes through the same gateway
    ok = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
        "model": served_model, "messages": user_message(CONVERSATIONS["benign"]), "temperature": 0})
    assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] == "stop"


def test_streamed_prompt_block(gateway_factory: Callable[..., str], strict_prompt_policy: str, served_model: str) -> None:
    base = gateway_factory(guard={"policy_file": strict_prompt_policy, "prompt_check": True})
    conv = CONVERSATIONS["unsafe_reasoning"]
    with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=60, json={
            "model": served_model, "messages": user_message(conv), "stream": True}) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    assert '"finish_reason":"content_filter"' in lines[-2] and '"stage":"prompt"' in lines[-2]

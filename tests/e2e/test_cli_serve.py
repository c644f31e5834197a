"""`thoughtguard serve --model DIR`: the gateway starts and supervises vLLM; Ctrl-C stops both.

This is what `make serve` runs (with the embedded SmolLM2 model, whose chat template opens
<think> so the inline splitter does the reasoning split).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.support import ROOT, SMOLLM_MODEL, TINY_MODEL, free_port, vllm_generated, wait_running_some, wait_running_zero

pytestmark = pytest.mark.vllm


def _serve(model: Path, port: int, vllm_port: int) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--model", str(model), "--port", str(port),
         "--vllm-port", str(vllm_port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    return proc, lines


def _wait_serving(proc: subprocess.Popen[str], lines: list[str]) -> None:
    deadline = time.monotonic() + 300
    while not any("ready. base_url=" in ln for ln in lines):
        assert proc.poll() is None, "".join(lines[-50:])
        assert time.monotonic() < deadline, "".join(lines[-50:])
        time.sleep(0.5)


def _kill_leftovers(proc: subprocess.Popen[str], vllm_port: int) -> None:
    """Whatever a failed test left running: the gateway, and the vLLM on its port."""
    if proc.poll() is None:
        proc.kill()
    for c in psutil.Process().children(recursive=True):
        if c.pid != proc.pid and "vllm" in " ".join(c.cmdline()) and str(vllm_port) in " ".join(c.cmdline()):
            c.kill()


@pytest.mark.parametrize("model", [TINY_MODEL, SMOLLM_MODEL], ids=["tiny-mlrm-vl", "smollm2-135m"])
def test_serve_supervises_vllm_and_ctrl_c_leaves_no_orphan(model: Path) -> None:
    if not (model / "config.json").is_file():
        pytest.fail(f"{model} missing: `make models` builds it")
    port, vllm_port = free_port(), free_port()
    proc, lines = _serve(model, port, vllm_port)
    try:
        _wait_serving(proc, lines)
        assert any(f"base_url=http://127.0.0.1:{port}/v1" in ln for ln in lines)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "vLLM should run as a child process"

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=120)
        name = client.models.list().data[0].id
        assert name == model.name
        reply = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0, max_tokens=96,
        )
        msg = reply.choices[0].message
        reasoning = (msg.model_extra or {}).get("reasoning") or ""
        assert reasoning.strip(), "the model reasons visibly"
        assert "<think>" not in reasoning + (msg.content or "") and "</think>" not in (msg.content or "")
        if model == SMOLLM_MODEL:
            _client_disconnect_aborts_upstream(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{vllm_port}", name)

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0
        time.sleep(1)
        alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"orphans left: {alive}"
    finally:
        _kill_leftovers(proc, vllm_port)


def _client_disconnect_aborts_upstream(gateway_url: str, vllm_url: str, name: str) -> None:
    """A client that hangs up mid-stream ends the upstream generation too.

    Checked on SmolLM2 (tens of tokens a second here): the tiny test model can finish thousands
    of tokens before a hang-up is noticed, which made the check racy on it.
    """
    max_tokens = 1500
    body = {
        "model": name, "messages": [{"role": "user", "content": "Tell me about the history of Paris."}],
        "temperature": 0, "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
        "thoughtguard": {"mode": "live"},
    }
    generated = vllm_generated(vllm_url)
    with httpx.Client(timeout=120) as http:
        with http.stream("POST", f"{gateway_url}/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            for _ in range(6):
                next(lines)
            wait_running_some(vllm_url, within=10.0)
    wait_running_zero(vllm_url, within=5.0)
    assert vllm_generated(vllm_url) - generated < max_tokens // 4


def test_serve_exits_non_zero_when_vllm_dies_while_serving() -> None:
    """A gateway with a dead upstream would fail every request while looking alive; it stops
    instead, so that the orchestrator restarts both (the CPU engine core died this way on a seeded
    chunked prefill, tests/e2e/test_seeded.py)."""
    if not (TINY_MODEL / "config.json").is_file():
        pytest.fail(f"{TINY_MODEL} missing: `make models` builds it")
    port, vllm_port = free_port(), free_port()
    proc, lines = _serve(TINY_MODEL, port, vllm_port)
    try:
        _wait_serving(proc, lines)
        children = psutil.Process(proc.pid).children(recursive=True)
        (api,) = [c for c in psutil.Process(proc.pid).children() if "vllm.entrypoints" in " ".join(c.cmdline())]
        api.kill()
        assert proc.wait(60) == 1, "".join(lines[-30:])
        assert any("while serving; shutting down" in ln for ln in lines)
        time.sleep(1)
        alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"orphans left: {alive}"
    finally:
        _kill_leftovers(proc, vllm_port)

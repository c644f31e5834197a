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

import openai
import psutil
import pytest

from tests.support import ROOT, SMOLLM_MODEL, TINY_MODEL, free_port

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


@pytest.mark.parametrize("model", [TINY_MODEL, SMOLLM_MODEL], ids=["tiny-mlrm-vl", "smollm2-135m"])
def test_serve_supervises_vllm_and_ctrl_c_leaves_no_orphan(model: Path) -> None:
    if not (model / "config.json").is_file():
        pytest.fail(f"{model} missing: `make models` builds it")
    port, vllm_port = free_port(), free_port()
    proc, lines = _serve(model, port, vllm_port)
    try:
        deadline = time.monotonic() + 300
        while not any("ready. base_url=" in ln for ln in lines):
            assert proc.poll() is None, "".join(lines[-50:])
            assert time.monotonic() < deadline, "".join(lines[-50:])
            time.sleep(0.5)
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

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0
        time.sleep(1)
        alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"orphans left: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in psutil.Process().children(recursive=True):
            if c.pid != proc.pid and "vllm" in " ".join(c.cmdline()) and str(vllm_port) in " ".join(c.cmdline()):
                c.kill()

"""Stopping the supervised vLLM waits for its whole process group, not only the API server."""

from __future__ import annotations

import subprocess
import sys
import time

from server.supervisor import VLLMProcess, _group_running

# a stand-in for vLLM's engine core: in the leader's process group, it outlives a SIGTERM
CHILD = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: None)
open(sys.argv[1], "w").close()
time.sleep(float(sys.argv[2]))
"""


def _group(tmp_path, child_seconds: float) -> VLLMProcess:
    ready = tmp_path / "ready"
    script = f'"{sys.executable}" -c \'{CHILD}\' {ready} {child_seconds} & exec sleep 60'
    vllm = VLLMProcess(model="unused", port=0)
    vllm.proc = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 30
    while not ready.exists():  # the child has its SIGTERM handler
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return vllm


def test_stop_waits_for_a_member_that_outlives_the_leader(tmp_path):
    vllm = _group(tmp_path, child_seconds=1.5)
    started = time.monotonic()
    vllm.stop(timeout=20)
    assert vllm.proc.returncode is not None and not _group_running(vllm.proc.pid)
    assert 1.0 <= time.monotonic() - started < 15  # it waited for the child, which then exited by itself


def test_stop_kills_a_member_that_ignores_sigterm(tmp_path):
    vllm = _group(tmp_path, child_seconds=60)
    started = time.monotonic()
    vllm.stop(timeout=0.5)
    assert not _group_running(vllm.proc.pid) and time.monotonic() - started < 10


def test_an_up_to_date_model_folder_gets_the_current_serving_flags(tmp_path):
    """Serving flags change without the weights (chunked prefill went off in session 17), so
    `make models` rewrites the hints even where the stamp says the weights are current."""
    import json
    import os
    from pathlib import Path

    from server.supervisor import CPU_ARGS, SERVE_HINTS, ModelHints

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "tiny"
    out.mkdir()
    stamp = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv=['x']; sys.path.insert(0, 'scripts'); import build_tiny_mlrm as b; "
                               "print(f'{b.source_hash()} steps=200 lr=0.01')"],
        cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    (out / ".build-stamp").write_text(stamp + "\n")
    (out / SERVE_HINTS).write_text(json.dumps({"vllm_args": ["--enforce-eager"], "env": {}}))
    run = subprocess.run([sys.executable, "scripts/build_tiny_mlrm.py", "--out", str(out)], cwd=root,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr
    assert "up to date" in run.stdout  # no rebuild
    args = ModelHints.for_model(str(out)).vllm_args
    assert args[: len(CPU_ARGS)] == CPU_ARGS and "--no-enable-chunked-prefill" in args

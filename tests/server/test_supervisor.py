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

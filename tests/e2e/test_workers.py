"""`thoughtguard serve --model DIR --workers 2`: two gateway processes on one port, one vLLM.

Streams spread over both workers, metrics merge (requests_total equals the requests sent), the
audit log stays one JSON object a line, a killed worker is replaced (uvicorn's supervisor) with
its live gauge dropped, and Ctrl-C stops every process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import openai
import psutil
import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.support import CONVERSATIONS, ROOT, TINY_MODEL, free_port, user_message

pytestmark = pytest.mark.vllm


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _requests_by_pid(metrics_dir: Path) -> dict[int, float]:
    out = {}
    for f in metrics_dir.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(f))
        out[int(f.stem.rsplit("_", 1)[1])] = sum(
            v for key, v, *_ in values if json.loads(key)[1] == "thoughtguard_requests_total")
    return out


def _workers(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    out = []
    for c in psutil.Process(proc.pid).children():
        try:
            if "spawn_main" in " ".join(c.cmdline()) and c.status() != psutil.STATUS_ZOMBIE:
                out.append(c)
        except psutil.Error:  # gone, or a zombie not yet reaped
            pass
    return out


@contextmanager
def _serving(model: Path, **env: str) -> Iterator[tuple[subprocess.Popen[str], list[str], int]]:
    """``thoughtguard serve --model MODEL --workers 2`` until it says ready; killed with its
    children (vLLM, the workers) whatever the test left running."""
    if not (model / "config.json").is_file():
        pytest.fail(f"{model} missing: `make models` builds it")
    port, vllm_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--model", str(model), "--port", str(port),
         "--vllm-port", str(vllm_port), "--workers", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    try:
        deadline = time.monotonic() + 300
        while not any("ready. base_url=" in ln for ln in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines[-60:])
            time.sleep(0.5)
        yield proc, lines, port
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in psutil.Process().children(recursive=True):
            try:
                if str(vllm_port) in " ".join(c.cmdline()) or "spawn_main" in " ".join(c.cmdline()):
                    c.kill()
            except psutil.Error:
                pass


def _stops_clean(proc: subprocess.Popen[str], sig: int, tracked: list[psutil.Process]) -> None:
    """``sig`` makes the supervisor exit 0 with none of ``tracked`` left running."""
    proc.send_signal(sig)
    assert proc.wait(60) == 0
    time.sleep(1)
    alive = [c for c in tracked if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left: {alive}"


def test_two_workers_share_the_port_the_metrics_and_the_audit_log(tmp_path: Path) -> None:
    metrics_port = free_port()
    metrics_dir, audit = tmp_path / "metrics", tmp_path / "audit.jsonl"
    metrics_dir.mkdir()
    with _serving(TINY_MODEL, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), THOUGHTGUARD_AUDIT__PATH=str(audit),
                  THOUGHTGUARD_METRICS_PORT=str(metrics_port)) as (proc, lines, port):
        base = f"http://127.0.0.1:{port}"
        assert any("workers=2" in ln for ln in lines)
        assert len(_workers(proc)) == 2

        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=120)
        convs = ["benign", "unsafe_reasoning", "collapse", "benign_math"] * 6  # 24 streams at once
        results: list[str | None] = [None] * len(convs)

        def one(i: int, conv_id: str) -> None:
            stream = client.chat.completions.create(
                model="tiny-mlrm-vl", messages=user_message(CONVERSATIONS[conv_id]), temperature=0,
                max_tokens=256, stream=True)
            results[i] = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason][-1]

        threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(convs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count("content_filter") == 12 and results.count("stop") == 12, results

        by_pid = _requests_by_pid(metrics_dir)
        assert sorted(by_pid) == sorted(w.pid for w in _workers(proc))
        assert all(n > 0 for n in by_pid.values()), f"streams did not spread over both workers: {by_pid}"
        for url in (f"{base}/metrics", f"http://127.0.0.1:{metrics_port}/metrics"):
            text = httpx.get(url).text
            assert _metric(text, "thoughtguard_requests_total") == len(convs)
            assert _metric(text, "thoughtguard_requests_in_flight") == 0
            # histograms merge: one end-to-end latency per request, whichever worker served it
            assert _metric(text, "thoughtguard_e2e_request_latency_seconds_count") == len(convs)

        events = [json.loads(line) for line in audit.read_text().splitlines()]
        assert sum(e["event"] == "request" for e in events) == len(convs)
        assert sum(e["event"] == "decision" for e in events) == 12

        # a killed worker is replaced; its live gauge goes, its counted requests stay
        victim = _workers(proc)[0]
        victim.kill()
        deadline = time.monotonic() + 60
        while victim.pid in {w.pid for w in _workers(proc)} or len(_workers(proc)) < 2:
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while True:  # the new worker is up once a request through the port succeeds on it
            try:
                reply = client.chat.completions.create(model="tiny-mlrm-vl",
                                                       messages=user_message(CONVERSATIONS["benign"]),
                                                       temperature=0, max_tokens=128)
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline
                time.sleep(1)
        assert reply.choices[0].message.content.strip() == CONVERSATIONS["benign"]["answer"]
        time.sleep(2)  # the supervisor drops a dead worker's live gauges within a second
        assert not list(metrics_dir.glob(f"gauge_live*_{victim.pid}.db"))
        text = httpx.get(f"{base}/metrics").text
        assert _metric(text, "thoughtguard_requests_total") == len(convs) + 1
        assert _metric(text, "thoughtguard_requests_in_flight") == 0

        tracked = psutil.Process(proc.pid).children(recursive=True)  # vLLM, the workers, the replacement
        assert len(tracked) >= 3
        _stops_clean(proc, signal.SIGINT, tracked)  # Ctrl-C


def test_sigterm_drains_in_flight_streams_with_two_workers(tmp_path: Path) -> None:
    """SIGTERM while four streams are in flight: the workers finish their streams
    (``drain_timeout_s``) before the supervisor stops vLLM and exits 0."""
    from tests.support import SMOLLM_MODEL

    with _serving(SMOLLM_MODEL, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)) as (proc, _, port):
        tracked = psutil.Process(proc.pid).children(recursive=True)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=120)
        started = threading.Barrier(5)
        ends: list[tuple[str | None, int]] = []

        def one() -> None:
            stream = client.chat.completions.create(
                model=SMOLLM_MODEL.name, messages=[{"role": "user", "content": "Explain how tides work."}],
                temperature=0, max_tokens=96, stream=True, stream_options={"include_usage": True},
                extra_body={"min_tokens": 96, "thoughtguard": {"mode": "live"}})
            first, finish, tokens = True, None, 0
            for chunk in stream:
                if first:
                    first = False
                    started.wait(60)
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
            ends.append((finish, tokens))

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        started.wait(120)  # every stream has its first chunk: all four are in flight
        _stops_clean(proc, signal.SIGTERM, tracked)
        for t in threads:
            t.join(120)
        assert ends == [("length", 96)] * 4, ends  # drained to their end, none cut

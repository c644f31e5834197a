"""Test support: real servers (vLLM as a child process, the gateway under uvicorn) on loopback."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ROOT / "models" / "tiny-mlrm-vl"
SMOLLM_MODEL = ROOT / "models" / "smollm2-135m"
SCRIPTED = json.loads((ROOT / "scripts" / "tiny_mlrm_conversations.json").read_text())
CONVERSATIONS = {c["id"]: c for c in SCRIPTED["conversations"]}
DATA_DIR = (ROOT.parent / "shared" / "data").resolve()
FIGSTEP_IMAGES = DATA_DIR / "multimodal" / "figstep" / "images-tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc_alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc_alive is not None and not proc_alive():
            raise RuntimeError(f"server process died before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout}s")


class ThreadedServer:
    """A real uvicorn server on a loopback port, in a thread of the test process."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


_RUNNING = re.compile(r'^vllm:num_requests_running\{[^}]*\}\s+([0-9.eE+-]+)', re.M)


_GENERATED = re.compile(r'^vllm:generation_tokens_total\{[^}]*\}\s+([0-9.eE+-]+)', re.M)


def vllm_generated(vllm_url: str) -> float:
    """Tokens vLLM has generated since it started, all requests together."""
    return sum(float(v) for v in _GENERATED.findall(httpx.get(f"{vllm_url}/metrics", timeout=5).text))


def vllm_running(vllm_url: str) -> float:
    text = httpx.get(f"{vllm_url}/metrics", timeout=5).text
    return sum(float(v) for v in _RUNNING.findall(text))


def wait_running_zero(vllm_url: str, within: float) -> float:
    """Seconds until vLLM reports no running request; raises if it takes longer than ``within``."""
    return _wait_running(vllm_url, lambda n: n == 0, within, "still has running requests")


def wait_running_some(vllm_url: str, within: float) -> float:
    """Seconds until vLLM reports a running request.

    vLLM's gauge is set from the scheduler's stats after a step, so the first streamed chunk can
    reach a client before the gauge says the request runs; a single read right after it is racy.
    """
    return _wait_running(vllm_url, lambda n: n >= 1, within, "reports no running request")


def _wait_running(vllm_url: str, done: Callable[[float], bool], within: float, failure: str) -> float:
    start = time.monotonic()
    while True:
        if done(vllm_running(vllm_url)):
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"vLLM {failure} after {within}s")
        time.sleep(0.05)


def image_data_url(path: Path) -> str:
    import base64

    mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def user_message(conv: dict[str, Any], image_url: str | None = None) -> list[dict[str, Any]]:
    if conv.get("image"):
        assert image_url is not None
        return [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_url}},
                    {"type": "text", "text": conv["prompt"]},
                ],
            }
        ]
    return [{"role": "user", "content": conv["prompt"]}]


def stream_collect(stream: Any) -> dict[str, Any]:
    """Read an openai SDK stream into reasoning, content, finish reason, extension, usage."""
    out: dict[str, Any] = {"reasoning": "", "reasoning_content": "", "content": "", "finish_reason": None,
                           "thoughtguard": None, "usage": None, "id": None, "order": []}
    for chunk in stream:
        out["id"] = chunk.id
        if chunk.usage is not None:
            out["usage"] = chunk.usage
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            r = extra.get("reasoning")
            if r:
                out["reasoning"] += r
                out["reasoning_content"] += extra.get("reasoning_content") or ""
                out["order"].append("reasoning")
            if choice.delta.content:
                out["content"] += choice.delta.content
                out["order"].append("answer")
            if choice.finish_reason:
                out["finish_reason"] = choice.finish_reason
                out["thoughtguard"] = (choice.model_extra or {}).get("thoughtguard")
    return out

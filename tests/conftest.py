from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support import ROOT, TINY_MODEL, ThreadedServer, free_port, wait_http

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def vllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real vLLM (CPU build) serving the tiny scripted VL model, for the whole session."""
    if not (TINY_MODEL / "config.json").is_file():
        pytest.fail(f"{TINY_MODEL} missing: run `make models` (make test builds it)")
    from server.supervisor import VLLMProcess

    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    proc = VLLMProcess(model=str(TINY_MODEL), port=port, log_file=log)
    proc.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=300, proc_alive=lambda: proc.exited() is None)
    except Exception:
        proc.stop()
        sys.stderr.write(log.read_text()[-5000:])
        raise
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture(scope="session")
def gateway_factory(vllm_url: str) -> Iterator[Callable[..., str]]:
    """Start real gateways (uvicorn on loopback) with given settings; one per distinct config."""
    from server.app import create_app
    from server.config import Settings

    started: dict[str, ThreadedServer] = {}

    def make(upstream_url: str | None = None, **overrides: Any) -> str:
        key = repr((upstream_url, sorted(overrides.items())))
        if key not in started:
            upstream_cfg = {"url": (upstream_url or vllm_url) + "/v1"}
            upstream_cfg.update(overrides.pop("upstream", {}))
            settings = Settings(upstream=upstream_cfg, **overrides)
            started[key] = ThreadedServer(create_app(settings)).start()
        return started[key].url

    yield make
    for srv in started.values():
        srv.stop()


@pytest.fixture(scope="session")
def gateway_url(gateway_factory: Callable[..., str]) -> str:
    """The gateway with its shipped defaults (learned detector, default policy)."""
    return gateway_factory()


@pytest.fixture(scope="session")
def served_model(vllm_url: str) -> str:
    import httpx

    return httpx.get(f"{vllm_url}/v1/models").json()["data"][0]["id"]

"""The ``thoughtguard`` command: ``serve`` here, ``train`` / ``eval`` / ``data`` from guard.cli."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from guard.detectors.stack import STACKS
from server.supervisor import ModelHints, VLLMProcess


def _serve_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve",
        help="run the guarded gateway (and optionally a managed vLLM)",
        description="Everything after a bare `--` is passed to vLLM unchanged.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--upstream", help="guard an OpenAI-compatible server that already runs (base URL, …/v1)")
    src.add_argument("--model", help="start vLLM on this model folder as a managed child process")
    p.add_argument("--host", help="gateway host (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="gateway port (default 8000)")
    p.add_argument("--workers", type=int, help="gateway processes on the port (default 1; settings: workers)")
    p.add_argument("--config", help="YAML settings file (same keys as THOUGHTGUARD_* variables)")
    p.add_argument("--policy", help="guard policy YAML")
    p.add_argument("--mode", choices=["buffered", "hidden", "live"], help="hold-back mode for the deployment")
    p.add_argument("--detector", choices=list(STACKS))
    p.add_argument("--no-guard", action="store_true", help="pass-through (for overhead measurements)")
    p.add_argument("--vllm-port", type=int, default=8001, help="port of the managed vLLM (default 8001)")
    p.add_argument("--served-model-name", help="model name clients use (default: the model folder name)")
    p.add_argument("--reasoning-parser", help="vLLM reasoning parser, e.g. deepseek_r1 or qwen3")
    p.add_argument("--vllm-log", help="file for the managed vLLM's output (default: inherit)")
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for vLLM to load")


def _overrides(args: argparse.Namespace, implicit_think: bool | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.host:
        out["host"] = args.host
    if args.port:
        out["port"] = args.port
    if args.workers:
        out["workers"] = args.workers
    upstream: dict[str, Any] = {}
    if args.upstream:
        upstream["url"] = args.upstream
    elif args.model:
        upstream["url"] = f"http://127.0.0.1:{args.vllm_port}/v1"
    if implicit_think is not None:
        upstream["implicit_think"] = implicit_think
    guard: dict[str, Any] = {}
    if args.policy:
        guard["policy_file"] = args.policy
    if args.mode:
        guard["mode"] = args.mode
    if args.detector:
        guard["detector"] = args.detector
    if args.no_guard:
        guard["enabled"] = False
    return out | ({"upstream": upstream} if upstream else {}) | ({"guard": guard} if guard else {})


def _wait_ready(url: str, vllm: VLLMProcess | None, timeout: float, on_ready: Any, stop: threading.Event) -> None:
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        if vllm is not None and vllm.exited() is not None:
            print(f"thoughtguard: vLLM exited with code {vllm.exited()}", file=sys.stderr, flush=True)
            on_ready(False)
            return
        try:
            if httpx.get(url.rstrip("/") + "/models", timeout=2.0).status_code == 200:
                on_ready(True)
                _watch(vllm, on_ready, stop)
                return
        except httpx.HTTPError:
            pass
        stop.wait(1.0)
    if not stop.is_set():
        print(f"thoughtguard: upstream not ready after {timeout:.0f}s", file=sys.stderr, flush=True)
        on_ready(False)


def _watch(vllm: VLLMProcess | None, on_ready: Any, stop: threading.Event) -> None:
    """Once serving: if the supervised vLLM dies, stop the gateway too and exit non-zero.

    A gateway whose upstream is gone would answer every request with an error while its liveness
    probe stays green; exiting lets the orchestrator (Kubernetes, systemd) restart both.
    """
    while vllm is not None and not stop.wait(1.0):
        if vllm.exited() is not None:
            print(f"thoughtguard: vLLM exited with code {vllm.exited()} while serving; shutting down",
                  file=sys.stderr, flush=True)
            on_ready(False)
            return


def serve(args: argparse.Namespace, vllm_args: list[str]) -> int:
    import os

    import uvicorn

    if args.config:
        os.environ["THOUGHTGUARD_CONFIG"] = args.config
    from server.app import create_app
    from server.config import Settings

    hints = ModelHints.for_model(args.model) if args.model else None
    overrides = _overrides(args, hints.implicit_think if hints else None)
    settings = Settings.with_overrides(overrides)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print("thoughtguard settings:", json.dumps(settings.describe(), indent=2, default=str), flush=True)

    vllm: VLLMProcess | None = None
    if args.model:
        extra = list(vllm_args)
        if args.reasoning_parser:
            extra += ["--reasoning-parser", args.reasoning_parser]
        vllm = VLLMProcess(
            model=args.model,
            port=args.vllm_port,
            served_model_name=args.served_model_name,
            extra_args=extra,
            log_file=Path(args.vllm_log) if args.vllm_log else None,
        )
        print("thoughtguard: starting vLLM:", " ".join(vllm.command()), flush=True)
        vllm.start()

    if settings.workers > 1:
        from server.workers import Workers

        workers = Workers(settings, overrides)
        run, stop_serving = workers.run, workers.stop
    else:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
            )
        )
        run = server.run

        def stop_serving() -> None:
            server.should_exit = True

    base_url = f"http://{settings.host}:{settings.port}/v1"

    def on_ready(ok: bool) -> None:
        if ok:
            print(f"thoughtguard: ready. base_url={base_url} workers={settings.workers}", flush=True)
        else:
            stop_serving()

    stop = threading.Event()
    watcher = threading.Thread(
        target=_wait_ready, args=(settings.upstream.url, vllm, args.ready_timeout, on_ready, stop), daemon=True
    )
    watcher.start()
    died_first = False
    try:
        run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it already handled by shutting down gracefully
    finally:
        stop.set()
        if vllm is not None:
            died_first = vllm.exited() is not None  # vLLM failed on its own, not stopped by us
            print("thoughtguard: stopping vLLM", flush=True)
            vllm.stop()
    return 1 if died_first else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(prog="thoughtguard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    try:
        from guard.cli import add_subcommands
    except ImportError:  # pragma: no cover - guard.cli is part of the package
        add_subcommands = None
    if add_subcommands is not None:
        add_subcommands(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args, passthrough)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

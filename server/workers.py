"""Several gateway processes on one port: uvicorn's supervisor, plus what sharing needs.

The port is bound once here and handed to each worker (uvicorn's ``Multiprocess``); the kernel
spreads connections over the workers that accept. The supervisor replaces a worker that dies and,
on SIGINT/SIGTERM, sends each worker SIGTERM, so each drains its streams (``drain_timeout_s``)
before this returns. Metrics: each worker writes to a shared directory (prometheus-client's
multiprocess mode) and any worker's ``/metrics`` (or ``metrics_port``, served here) merges them;
a dead worker's live gauges are dropped so the in-flight gauge stays right.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from server.config import Settings

_PID = re.compile(r"_(\d+)\.db$")


def _reap(path: Path, stop: threading.Event) -> None:
    """Drop the live-gauge files of processes that are gone (a killed worker never cleans up)."""
    from prometheus_client import multiprocess

    while not stop.wait(1.0):
        for f in path.glob("gauge_live*.db"):
            m = _PID.search(f.name)
            if m and not _alive(int(m.group(1))):
                multiprocess.mark_process_dead(int(m.group(1)), str(path))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Workers:
    """``settings.workers`` gateway processes; :meth:`run` blocks until they have all stopped."""

    def __init__(self, settings: Settings, overrides: dict[str, Any]) -> None:
        import uvicorn
        from uvicorn.supervisors import Multiprocess

        self.settings = settings
        given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.metrics_dir = Path(given or tempfile.mkdtemp(prefix="thoughtguard-metrics-"))
        self._own_dir = given is None
        for stale in self.metrics_dir.glob("*.db"):  # a previous run's counters are not this run's
            stale.unlink()
        # set before any worker starts: prometheus-client picks its value store at import
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        from server.app import WORKER_OVERRIDES

        os.environ[WORKER_OVERRIDES] = json.dumps(overrides)
        config = uvicorn.Config(
            "server.app:worker_app", factory=True, host=settings.host, port=settings.port,
            workers=settings.workers, log_level=settings.log_level,
            timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
        )
        self.supervisor = Multiprocess(config, sockets=[config.bind_socket()])

    def stop(self) -> None:
        self.supervisor.should_exit.set()

    def run(self) -> None:
        from prometheus_client import start_http_server

        from server.metrics import merged_registry

        stop = threading.Event()
        reaper = threading.Thread(target=_reap, args=(self.metrics_dir, stop), daemon=True)
        reaper.start()
        metrics_server = None
        if self.settings.metrics_port:
            metrics_server, _ = start_http_server(self.settings.metrics_port, addr=self.settings.host,
                                                  registry=merged_registry())
        try:
            self.supervisor.run()
        finally:
            stop.set()
            if metrics_server is not None:
                metrics_server.shutdown()
            if self._own_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

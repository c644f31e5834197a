"""The audit log: one JSON line per guard decision and per finished request.

Lines are handed to a queue and written by a listener thread (stdlib ``QueueHandler`` /
``QueueListener``), so a slow disk never stalls a stream; stopping the listener drains the
queue, so a graceful shutdown loses nothing. The file handler is concurrent-log-handler's: each
line is written and the file rotated under a file lock, so several worker processes share one
log and every line stays whole. No prompt or output text
is written unless ``capture_window`` is on, and then only the flagged window.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from concurrent_log_handler import ConcurrentRotatingFileHandler

from guard.verdict import Verdict


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int, backups: int, capture_window: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.capture_window = capture_window
        self._queue: queue.Queue[logging.LogRecord] = queue.Queue(-1)
        handler = ConcurrentRotatingFileHandler(str(path), maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._listener = logging.handlers.QueueListener(self._queue, handler)
        self._logger = logging.Logger(f"thoughtguard.audit.{id(self)}")
        self._logger.addHandler(logging.handlers.QueueHandler(self._queue))
        self._logger.propagate = False
        self._listener.start()

    def _write(self, record: dict[str, Any]) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **record}
        self._logger.info(json.dumps(record, ensure_ascii=False, separators=(",", ":")))

    def decision(self, request_id: str, model: str, verdict: Verdict) -> None:
        record: dict[str, Any] = {
            "event": "decision",
            "request_id": request_id,
            "model": model,
            **verdict.as_extension(),
        }
        if self.capture_window:
            record["window"] = verdict.window
        self._write(record)

    def request(self, request_id: str, model: str, **fields: Any) -> None:
        self._write({"event": "request", "request_id": request_id, "model": model, **fields})

    def close(self) -> None:
        self._listener.stop()  # drains what is queued
        for handler in self._listener.handlers:
            handler.close()

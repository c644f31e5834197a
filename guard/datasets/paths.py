"""Where the shared public data lives: read in place, never copied into the project."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "THOUGHTGUARD_DATA_DIR"
# a checkout sits next to ``shared/``; the data is read from there, relative to the repo root
_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT = _REPO_ROOT / ".." / "shared" / "data"


def data_dir(override: str | Path | None = None) -> Path:
    path = Path(override or os.environ.get(ENV) or DEFAULT)
    if not path.is_dir():
        raise FileNotFoundError(f"data directory {path} not found; set {ENV} or pass --data-dir")
    return path

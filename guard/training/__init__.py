"""Offline training of the learned classifier (imports torch and transformers lazily)."""

from __future__ import annotations

from pathlib import Path


def train(data_dir: str | Path | None, out_dir: str | Path, seed: int = 0, **kwargs: object) -> dict[str, object]:
    from guard.training.pipeline import train as _train

    return _train(data_dir, out_dir, seed, **kwargs)  # type: ignore[arg-type]


__all__ = ["train"]

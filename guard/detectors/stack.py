"""The named detector stacks that settings and the CLI accept, and what each one builds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from guard.detectors.base import Detector

StackName = Literal["intent", "learned+lexicon", "learned", "lexicon"]
STACKS: tuple[str, ...] = get_args(StackName)
DEFAULT_STACK: StackName = "intent"


def build(name: str, artifact: str | Path | None = None, *, threads: int = 1, device: str = "cpu",
          max_batch: int = 1) -> Detector:
    """``artifact``: the detector's directory (default: the shipped one). ``threads``, ``device`` and
    ``max_batch`` are the intent reader's (ONNX Runtime threads, ``cpu`` or ``cuda``, checks per batch)."""
    if name == "intent":
        from guard.detectors.intent import IntentDetector

        return IntentDetector(artifact, threads=threads, device=device, max_batch=max_batch)  # type: ignore[arg-type]
    from guard.detectors.classifier import LearnedDetector
    from guard.detectors.ensemble import Ensemble
    from guard.detectors.lexicon import LexiconDetector

    if name == "lexicon":
        return LexiconDetector()
    if name == "learned":
        return LearnedDetector(artifact)
    if name == "learned+lexicon":
        return Ensemble(LearnedDetector(artifact), LexiconDetector())
    raise ValueError(f"unknown detector stack {name!r}; one of {', '.join(STACKS)}")

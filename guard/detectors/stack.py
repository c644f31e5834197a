"""The named detector stacks that settings and the CLI accept, and what each one builds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from guard.detectors.base import Detector

StackName = Literal["learned+lexicon", "learned", "lexicon"]
STACKS: tuple[str, ...] = get_args(StackName)
DEFAULT_STACK: StackName = "learned+lexicon"


def build(name: str, artifact: str | Path | None = None) -> Detector:
    """``artifact``: the learned classifier's directory (default: the shipped one)."""
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

"""The named detector stacks that settings and the CLI accept, and what each one builds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from guard.detectors.base import Detector
from guard.policy import Policy

StackName = Literal["learned+lexicon", "learned", "lexicon", "learned+lexicon+contextual"]
STACKS: tuple[str, ...] = get_args(StackName)
DEFAULT_STACK = "learned+lexicon"


def build(name: str, artifact: str | Path | None = None) -> Detector:
    """``artifact``: the fast classifier's directory (default: the shipped one)."""
    from guard.detectors.classifier import LearnedDetector
    from guard.detectors.ensemble import Ensemble
    from guard.detectors.lexicon import LexiconDetector

    if name == "lexicon":
        return LexiconDetector()
    if name == "learned":
        return LearnedDetector(artifact)
    if name == "learned+lexicon+contextual":
        from guard.detectors.contextual import contextual_stack

        return contextual_stack(artifact)
    if name == "learned+lexicon":
        return Ensemble(LearnedDetector(artifact), LexiconDetector())
    raise ValueError(f"unknown detector stack {name!r}; one of {', '.join(STACKS)}")


def shipped_policy(detector: Detector, policy: Policy) -> Policy:
    """The shipped policy with the thresholds tuned for ``detector`` where it carries its own.

    The contextual cascade reads on another scale (a geometric mean of two tiers), so the
    thresholds tuned with it ship in its artifact; a policy file of one's own keeps its values.
    """
    from guard.detectors.contextual import ContextualDetector

    slow = getattr(detector, "slow", None)
    if isinstance(slow, ContextualDetector) and slow.weights.thresholds:
        return policy.model_copy(update={"thresholds": policy.thresholds.model_copy(update=slow.weights.thresholds)})
    return policy

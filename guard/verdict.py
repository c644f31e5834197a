"""What the guard decides, and what it lets through."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from guard.events import Stage


class Action(str, Enum):
    ALLOW = "allow"
    FLAG = "flag"
    STEER = "steer"
    BLOCK = "block"

    @property
    def stops_generation(self) -> bool:
        return self in (Action.BLOCK, Action.STEER)


@dataclass(frozen=True, slots=True)
class Detection:
    """One detector's reading of one window of text.

    ``unsafe`` is the probability that the window carries harmful content; ``refusal`` the
    probability that it recognises harm and declines (the self-flag signal of the seed paper).
    """

    unsafe: float
    category: str | None = None
    refusal: float = 0.0
    detector: str = ""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    stage: Stage
    category: str | None
    score: float
    detector: str
    position: int  # tokens of generated text seen when the decision fired
    reason: str = ""
    window: str = field(default="", repr=False)

    def as_extension(self) -> dict[str, object]:
        """The ``thoughtguard`` object clients see in the final chunk."""
        return {
            "action": self.action.value,
            "stage": self.stage.value,
            "category": self.category,
            "score": round(self.score, 4),
            "detector": self.detector,
            "position": self.position,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Release:
    """Verified text the server may forward to the client now."""

    stage: Stage
    text: str


@dataclass(frozen=True, slots=True)
class Reading:
    """One checked window, as the inspector and the HTML report draw it.

    ``start``/``end`` are character offsets of the window's new text in its stage's text as the
    model produced it (a steered continuation starts again at 0, with ``attempt`` one higher);
    ``decision`` is what the window's reading did: ``release``, ``hold`` (doubtful, kept back),
    ``suspect`` (unsafe, kept back until the debounce settles), ``flag``, ``steer``, ``block`` or
    ``error`` (the detector failed and the policy failed open).
    """

    stage: Stage
    start: int
    end: int
    text: str
    position: int  # tokens of generated text seen when the window was read
    unsafe: float
    category: str | None
    refusal: float
    decision: str
    attempt: int = 0

    def as_dict(self) -> dict[str, object]:
        score = self.unsafe if self.unsafe == self.unsafe else None  # NaN: the detector failed
        return {
            "stage": self.stage.value, "start": self.start, "end": self.end, "text": self.text,
            "position": self.position, "score": None if score is None else round(score, 4),
            "category": self.category, "refusal": round(self.refusal, 4), "decision": self.decision,
            "attempt": self.attempt,
        }

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

"""The one interface every detector implements.

Detectors read windows of text and return a :class:`~guard.verdict.Detection` per window.
They are async so a network tier (a guard model behind an OpenAI-compatible endpoint) and an
in-process tier (the learned classifier) compose in one cascade; in-process detectors simply
never await.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

from guard.events import Stage
from guard.verdict import Detection


@dataclass(frozen=True, slots=True)
class Window:
    """Text to judge: ``context`` is already-checked text kept for continuity, ``text`` is new."""

    stage: Stage
    text: str
    context: str = ""
    prompt: str = ""

    @property
    def full(self) -> str:
        return f"{self.context}{self.text}" if self.context else self.text


class Detector(ABC):
    name: str = "detector"

    @abstractmethod
    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        """One detection per window, in order. Raise on failure; the monitor applies fail-open/closed."""

    async def aclose(self) -> None:  # pragma: no cover - most detectors hold nothing
        return None

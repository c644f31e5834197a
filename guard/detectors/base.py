"""The one interface every detector implements.

Detectors read windows of text and return a :class:`~guard.verdict.Detection` per window.
They are async so a network tier (a guard model behind an OpenAI-compatible endpoint) and an
in-process tier (the learned classifier) compose in one cascade; in-process detectors simply
never await.

:meth:`Detector.check` is how the monitor calls a detector: the same detections, plus one
:class:`TierCheck` per tier that ran (a plain detector is one tier, a cascade its fast tier and,
when it escalated, its slow tier), recorded even when the tier fails or is cancelled by a timeout,
so cost and failures can be told apart per tier.
"""

from __future__ import annotations

import time
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


@dataclass(frozen=True, slots=True)
class TierCheck:
    """One tier's part of one check: its detector name, wall time, and whether it failed.

    ``failed`` covers errors and cancellation (the monitor's timeout), so a timed-out check is
    charged to the tier that was running.
    """

    tier: str
    seconds: float
    failed: bool = False


class Detector(ABC):
    name: str = "detector"

    @abstractmethod
    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        """One detection per window, in order. Raise on failure; the monitor applies fail-open/closed."""

    async def check(self, windows: Sequence[Window], record: list[TierCheck]) -> list[Detection]:
        """:meth:`detect`, appending a :class:`TierCheck` per tier that ran to ``record``.

        A detector made of tiers (:class:`~guard.detectors.cascade.Cascade`) overrides this;
        every other detector is one tier under its own name.
        """
        start = time.perf_counter()
        failed = True
        try:
            found = await self.detect(windows)
            if len(found) != len(windows):
                raise ValueError(f"{self.name} gave {len(found)} detections for {len(windows)} windows")
            failed = False
            return found
        finally:  # also on cancellation: a timed-out check is charged to the tier that ran
            record.append(TierCheck(self.name, time.perf_counter() - start, failed))

    async def aclose(self) -> None:  # pragma: no cover - most detectors hold nothing
        return None


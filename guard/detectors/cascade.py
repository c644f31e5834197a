"""Compose a fast detector with a slower, stronger one."""

from __future__ import annotations

from typing import Literal, Sequence

from guard.detectors.base import Detector, Window
from guard.verdict import Detection


class Cascade(Detector):
    """Run ``fast`` on every window; escalate to ``slow`` when fast is unsure (or always).

    ``unsure`` is the half-open band of fast ``unsafe`` scores that escalates. The slow tier's
    reading replaces the fast one for the windows it saw, so a confident guard model can clear
    a noisy fast flag as well as confirm it.
    """

    def __init__(
        self,
        fast: Detector,
        slow: Detector,
        *,
        escalate: Literal["unsure", "always"] = "unsure",
        unsure: tuple[float, float] = (0.2, 0.9),
    ) -> None:
        self.fast, self.slow = fast, slow
        self.escalate, self.unsure = escalate, unsure
        self.name = f"{fast.name}+{slow.name}"

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        first = await self.fast.detect(windows)
        lo, hi = self.unsure
        picked = [
            i for i, d in enumerate(first) if self.escalate == "always" or lo <= d.unsafe < hi
        ]
        if not picked:
            return first
        second = await self.slow.detect([windows[i] for i in picked])
        merged = list(first)
        for i, det in zip(picked, second):
            # the fast tier's refusal reading is kept: guard models don't report it
            merged[i] = Detection(
                unsafe=det.unsafe,
                category=det.category or first[i].category,
                refusal=max(det.refusal, first[i].refusal),
                detector=det.detector,
            )
        return merged

    async def aclose(self) -> None:
        await self.fast.aclose()
        await self.slow.aclose()

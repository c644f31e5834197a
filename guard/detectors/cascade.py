"""Compose a fast detector with a slower, stronger one."""

from __future__ import annotations

from typing import Literal, Sequence

from guard.detectors.base import Detector, TierCheck, Window
from guard.verdict import Detection


class Cascade(Detector):
    """Run ``fast`` on every window; escalate to ``slow`` when fast is unsure (or always).

    ``unsure`` is the half-open band of fast ``unsafe`` scores that escalates. The slow tier's
    reading replaces the fast one for the windows it saw, so a confident guard model can clear
    a noisy fast flag as well as confirm it. :meth:`check` records each tier under its own name
    (``learned+lexicon``, ``llama_guard_3``), the slow one only when it ran.
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
        return await self.check(windows, [])

    async def check(self, windows: Sequence[Window], record: list[TierCheck]) -> list[Detection]:
        first = await self.fast.check(windows, record)
        lo, hi = self.unsure
        picked = [
            i for i, d in enumerate(first) if self.escalate == "always" or lo <= d.unsafe < hi
        ]
        if not picked:
            return first
        second = await self.slow.check([windows[i] for i in picked], record)
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

"""Compose a fast detector with a slower, stronger one."""

from __future__ import annotations

import math
from typing import Collection, Literal, Sequence

from guard.detectors.base import Detector, TierCheck, Window
from guard.events import Stage
from guard.verdict import Detection


class Cascade(Detector):
    """Run ``fast`` on every window; escalate to ``slow`` when fast is unsure (or always).

    ``unsure`` is the half-open band of fast ``unsafe`` scores that escalates. With ``merge``
    ``replace`` the slow tier's reading replaces the fast one for the windows it saw, so a
    confident guard model can clear a noisy fast flag as well as confirm it; with ``geometric``
    the two are combined as sqrt(fast * slow), for a slow tier that is a peer rather than a judge
    (the contextual tier: weaker alone, but wrong on other windows). ``stages`` limits escalation
    to windows of those stages (the request's own reading, :attr:`Stage.PROMPT`, can stay the
    fast tier's). :meth:`check` records each tier under its own name (``learned+lexicon``,
    ``llama_guard_3``), the slow one only when it ran.
    """

    def __init__(
        self,
        fast: Detector,
        slow: Detector,
        *,
        escalate: Literal["unsure", "always"] = "unsure",
        unsure: tuple[float, float] = (0.2, 0.9),
        merge: Literal["replace", "geometric"] = "replace",
        stages: Collection[Stage] | None = None,
    ) -> None:
        self.fast, self.slow = fast, slow
        self.escalate, self.unsure, self.merge, self.stages = escalate, unsure, merge, stages
        self.name = f"{fast.name}+{slow.name}"

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        return await self.check(windows, [])

    async def check(self, windows: Sequence[Window], record: list[TierCheck]) -> list[Detection]:
        first = await self.fast.check(windows, record)
        lo, hi = self.unsure
        picked = [
            i for i, d in enumerate(first)
            if (self.escalate == "always" or lo <= d.unsafe < hi)
            and (self.stages is None or windows[i].stage in self.stages)
        ]
        if not picked:
            return first
        second = await self.slow.check([windows[i] for i in picked], record)
        merged = list(first)
        for i, det in zip(picked, second):
            # the fast tier's refusal reading is kept: guard models don't report it
            unsafe = math.sqrt(det.unsafe * first[i].unsafe) if self.merge == "geometric" else det.unsafe
            merged[i] = Detection(
                unsafe=unsafe,
                category=det.category or first[i].category,
                refusal=max(det.refusal, first[i].refusal),
                detector=det.detector,
            )
        return merged

    async def aclose(self) -> None:
        await self.fast.aclose()
        await self.slow.aclose()

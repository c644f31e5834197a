"""Read every window with several detectors and keep the most alarmed reading.

The default pairs the learned classifier (broad, paraphrase-tolerant) with the lexicon
(explicit instructions for harm that a small static-embedding model can average away). The
maximum of ``unsafe`` and of ``refusal`` is kept, with the category of the detector that set
the ``unsafe`` maximum; each member still costs well under a millisecond.
"""

from __future__ import annotations

from typing import Sequence

from guard.detectors.base import Detector, Window
from guard.verdict import Detection


class Ensemble(Detector):
    def __init__(self, *members: Detector) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one detector")
        self.members = members
        self.name = "+".join(m.name for m in members)

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        readings = [await m.detect(windows) for m in self.members]
        out = []
        for per_window in zip(*readings):
            top = max(per_window, key=lambda d: d.unsafe)
            out.append(
                Detection(
                    unsafe=top.unsafe,
                    category=top.category or next((d.category for d in per_window if d.category), None),
                    refusal=max(d.refusal for d in per_window),
                    detector=top.detector,
                )
            )
        return out

    async def aclose(self) -> None:
        for m in self.members:
            await m.aclose()

"""A detector that finds nothing: the guard-off configuration, for overhead benchmarks."""

from __future__ import annotations

from typing import Sequence

from guard.detectors.base import Detector, Window
from guard.verdict import Detection


class NullDetector(Detector):
    name = "none"

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        return [Detection(unsafe=0.0, detector=self.name) for _ in windows]

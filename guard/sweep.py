"""Recall and false-positive rate over the main threshold (``thresholds.unsafe``).

Each point is a real replay through the monitor at that threshold (``high`` raised to it where it
was lower, everything else as the policy says); the windows are read once and remembered
(:class:`~guard.detectors.memo.Memo`), highest threshold first, since that replay reads the most.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from guard.datasets.trace import Trace
from guard.detectors.base import Detector
from guard.detectors.memo import Memo
from guard.evaluate import replay
from guard.policy import Policy

GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995)


@dataclass(frozen=True, slots=True)
class Point:
    threshold: float
    recall: float
    fpr: float

    def as_dict(self) -> dict[str, float]:
        return {"threshold": self.threshold, "recall": round(self.recall, 4), "fpr": round(self.fpr, 4)}


def at(policy: Policy, threshold: float) -> Policy:
    th = policy.thresholds
    return policy.model_copy(update={"thresholds": th.model_copy(
        update={"unsafe": threshold, "high": max(th.high, threshold)})})


async def sweep(traces: Sequence[Trace], detector: Detector, policy: Policy,
                grid: Sequence[float] = GRID) -> list[Point]:
    memo = detector if isinstance(detector, Memo) else Memo(detector)
    points = []
    for t in sorted({*grid, policy.thresholds.unsafe}, reverse=True):
        flagged = [(await replay(tr, memo, at(policy, t))).flagged for tr in traces]
        unsafe = [f for f, tr in zip(flagged, traces) if tr.unsafe]
        safe = [f for f, tr in zip(flagged, traces) if not tr.unsafe]
        points.append(Point(t, sum(unsafe) / len(unsafe) if unsafe else 0.0, sum(safe) / len(safe) if safe else 0.0))
    return sorted(points, key=lambda p: p.threshold)

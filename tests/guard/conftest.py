from __future__ import annotations

import asyncio
from typing import Callable, Sequence

from guard.detectors.base import Detector, Window
from guard.events import Event
from guard.monitor import Monitor, Output
from guard.verdict import Detection


class Scripted(Detector):
    """Scores windows with a function of the window; records every window it saw."""

    name = "scripted"

    def __init__(self, score: Callable[[Window], Detection | float]) -> None:
        self.score = score
        self.seen: list[Window] = []

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        out = []
        for w in windows:
            self.seen.append(w)
            d = self.score(w)
            out.append(d if isinstance(d, Detection) else Detection(unsafe=float(d), category="S2", detector=self.name))
        return out


def feed_all(monitor: Monitor, events: list[Event]) -> list[Output]:
    async def run() -> list[Output]:
        out: list[Output] = []
        for e in events:
            out += await monitor.feed(e)
        return out

    return asyncio.run(run())

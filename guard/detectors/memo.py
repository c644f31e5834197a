"""A detector that remembers: each distinct window is read once, then answered from memory.

A threshold sweep replays the same traces many times; the monitor's windows do not depend on the
thresholds (only where a stream stops does), so every replay after the first is nearly free.
"""

from __future__ import annotations

from typing import Sequence

from guard.detectors.base import Detector, Window
from guard.verdict import Detection


class Memo(Detector):
    def __init__(self, inner: Detector) -> None:
        self.inner, self.name = inner, inner.name
        self.memory: dict[tuple[str, str, str], Detection] = {}
        self.reads = 0

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        keys = [(w.stage.value, w.prompt, w.full) for w in windows]
        unread = [(k, w) for k, w in zip(keys, windows) if k not in self.memory]
        if unread:
            found = await self.inner.detect([w for _, w in unread])
            self.reads += len(unread)
            self.memory.update((k, d) for (k, _), d in zip(unread, found) if d.error is None)
            fresh = dict(zip((k for k, _ in unread), found))
            return [self.memory.get(k) or fresh[k] for k in keys]
        return [self.memory[k] for k in keys]

    async def aclose(self) -> None:
        await self.inner.aclose()

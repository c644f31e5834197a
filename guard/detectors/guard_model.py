"""The optional guard-model tier: Llama Guard 3 or Qwen3Guard-Gen behind an injected completer.

guard/ does no I/O of its own: the server hands in ``complete(prompt) -> str`` (an HTTP call
to an OpenAI-compatible ``/v1/completions`` endpoint), tests hand in a recorded answer. The
prompt layouts and parsers live in :mod:`guard.detectors.guard_prompts`. Output that does not
parse raises, so the monitor's fail-closed / fail-open policy decides, as for any other error.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Literal, Sequence

from guard.detectors.base import Detector, Window
from guard.detectors.guard_prompts import FORMATS, GuardReading
from guard.events import Stage
from guard.verdict import Detection

Complete = Callable[[str], Awaitable[str]]
Format = Literal["llama_guard_3", "qwen3guard_gen"]

# Qwen3Guard's middle severity: not explicitly harmful, could become risky. Half-way, so the
# policy's thresholds (not this module) decide whether it counts.
CONTROVERSIAL = 0.5


def to_detection(reading: GuardReading, name: str) -> Detection:
    unsafe = {"unsafe": 1.0, "controversial": CONTROVERSIAL}.get(reading.severity, 0.0)
    return Detection(
        unsafe=unsafe,
        category=reading.categories[0] if reading.categories else None,
        refusal=1.0 if reading.refusal else 0.0,
        detector=name,
    )


class GuardModelDetector(Detector):
    def __init__(self, complete: Complete, *, format: Format = "llama_guard_3", max_concurrency: int = 8) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown guard model format {format!r}; expected one of {sorted(FORMATS)}")
        self.complete = complete
        self.format = format
        self.build, self.parse = FORMATS[format]
        self.name = format
        self._limit = asyncio.Semaphore(max_concurrency)

    def prompt_for(self, window: Window) -> str:
        """Moderate the model's text as the assistant's turn; a prompt-stage window as the user's."""
        if window.stage is Stage.PROMPT:
            return self.build(window.full)
        return self.build(window.prompt or "(no user text)", window.full)

    async def _one(self, window: Window) -> Detection:
        async with self._limit:
            raw = await self.complete(self.prompt_for(window))
        return to_detection(self.parse(raw), self.name)

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        return list(await asyncio.gather(*(self._one(w) for w in windows)))

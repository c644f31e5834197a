"""Typed events that flow from an upstream stream into the guard.

The server turns whatever the upstream sends (vLLM's ``reasoning`` deltas or inline
``<think>`` tags) into this one vocabulary, so the guard never sees wire formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Stage(str, Enum):
    PROMPT = "prompt"
    REASONING = "reasoning"
    ANSWER = "answer"


@dataclass(frozen=True, slots=True)
class TextDelta:
    stage: Stage
    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str | None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ImageMeta:
    """What the guard knows of an image the request carried (never its pixels)."""

    width: int
    height: int
    format: str
    sha256: str
    bytes: int


Event = TextDelta | Finish | Usage


def reasoning(text: str) -> TextDelta:
    return TextDelta(Stage.REASONING, text)


def answer(text: str) -> TextDelta:
    return TextDelta(Stage.ANSWER, text)

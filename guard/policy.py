"""The guard policy: what to do, per hazard category and stage, and how to watch the stream.

Loaded from YAML (``guard/policies/default.yaml`` is the shipped default). Validated with
pydantic because it is user input; everything downstream reads plain attributes.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from guard.events import Stage
from guard.verdict import Action

DEFAULT_POLICY_PATH = Path(__file__).parent / "policies" / "default.yaml"
# the static classifier's thresholds and hold-back rules (``guard.detector: learned+lexicon``)
STATIC_POLICY_PATH = Path(__file__).parent / "policies" / "static.yaml"


class HoldBack(str, Enum):
    BUFFERED = "buffered"  # nothing reaches the client before a check covered it
    HIDDEN = "hidden"  # reasoning is never sent; the answer is buffered
    LIVE = "live"  # forwarded at once; checks still run and leaked text is counted


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowSettings(_Strict):
    every_tokens: int = Field(16, ge=1, le=4096, description="check at least every K tokens")
    min_tokens: int = Field(4, ge=1, le=4096, description="a sentence boundary triggers a check once this many tokens wait")
    context_chars: int = Field(200, ge=0, le=8192, description="already-checked text carried into the next window")


class Thresholds(_Strict):
    unsafe: float = Field(0.5, ge=0, le=1)
    high: float = Field(0.9, ge=0, le=1, description="one window at or above this blocks at once")
    high_min_tokens: int = Field(
        0, ge=0, le=256,
        description="a lone `high` window blocks only once this many tokens have streamed; before, it counts like `unsafe`"
        " (the first few tokens, e.g. 'Step 1:', are too little text to judge alone)",
    )
    consecutive: int = Field(2, ge=1, le=16, description="windows at or above `unsafe` in a row that block")
    hold: float = Field(
        1.0, ge=0, le=1,
        description="a window below `unsafe` but at or above this is held back until a later window reads below it;"
        " it never blocks by itself (1.0: off)",
    )
    hold_max_tokens: int = Field(64, ge=0, le=1024, description="held text is released once it grows past this")
    lookahead_windows: int = Field(
        0, ge=0, le=16,
        description="verified text waits until this many later windows of its stream have passed too (the stream's"
        " end releases the rest); a cut drops it, so a harm the detector confirms a window late does not leak its"
        " opening (0: off)",
    )
    refusal: float = Field(0.5, ge=0, le=1, description="reasoning above this has self-flagged the request")
    collapse: float = Field(0.3, ge=0, le=1, description="after a self-flag, an answer window at or above this that is no refusal blocks")
    end_of_stream: Literal["block", "release"] = "block"
    prompt: float | None = Field(
        None, ge=0, le=1,
        description="the prompt check's threshold (its reading comes from a request head, calibrated apart); None: `unsafe`",
    )
    wary: float | None = Field(
        None, ge=0, le=1,
        description="a request whose harm reading is at or above this makes its stream wary: in buffered and hidden"
        " mode nothing of it is released until the whole stream has been checked (None: off)",
    )
    wary_window: float | None = Field(
        None, ge=0, le=1,
        description="a window reading at or above this makes the rest of its stream wary: what is verified after it"
        " waits for the stream's end (None: off)",
    )

    @property
    def prompt_threshold(self) -> float:
        return self.unsafe if self.prompt is None else self.prompt


class StageActions(_Strict):
    prompt: Action = Action.FLAG
    reasoning: Action = Action.BLOCK
    answer: Action = Action.BLOCK

    def for_stage(self, stage: Stage) -> Action:
        return getattr(self, stage.value)


class SteerSettings(_Strict):
    max_attempts: int = Field(1, ge=0, le=5)
    reflection: str = (
        "\n\nWait. Before going further I should think about safety: this request could cause real harm, "
        "so I will not provide harmful details and will answer safely instead."
    )


class FailureSettings(_Strict):
    mode: Literal["closed", "open"] = "closed"
    timeout_s: float = Field(2.0, gt=0, le=120)


class Policy(_Strict):
    mode: HoldBack = HoldBack.BUFFERED
    window: WindowSettings = WindowSettings()
    thresholds: Thresholds = Thresholds()
    actions: StageActions = StageActions()
    categories: dict[str, StageActions] = Field(default_factory=dict, description="per-category overrides")
    refusals: dict[str, str] = Field(default_factory=dict, description="refusal text by category; 'default' key is the fallback")
    steer: SteerSettings = SteerSettings()
    failure: FailureSettings = FailureSettings()

    @model_validator(mode="after")
    def _has_default_refusal(self) -> "Policy":
        if "default" not in self.refusals:
            object.__setattr__(
                self, "refusals", {**self.refusals, "default": "I can't help with that request."}
            )
        return self

    def action_for(self, category: str | None, stage: Stage) -> Action:
        actions = self.categories.get(category or "", self.actions)
        return actions.for_stage(stage)

    def refusal_for(self, category: str | None) -> str:
        return self.refusals.get(category or "", self.refusals["default"])

    def with_mode(self, mode: HoldBack | str | None) -> "Policy":
        return self if mode is None else self.model_copy(update={"mode": HoldBack(mode)})

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Policy":
        data = yaml.safe_load(Path(path or DEFAULT_POLICY_PATH).read_text()) or {}
        return cls.model_validate(data)

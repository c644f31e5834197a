"""The optional pre-generation check of the user's text (and any text read off its images)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from guard.detectors.base import Detector, TierCheck, Window
from guard.events import ImageMeta, Stage
from guard.policy import Policy
from guard.verdict import Action, Verdict


@dataclass(frozen=True, slots=True)
class PromptCheck:
    verdict: Verdict | None  # None: nothing found, or the policy allows what was found
    seconds: float
    error: str | None = None
    tiers: tuple[TierCheck, ...] = ()  # the check's cost and failure per detector tier


async def check_prompt(
    detector: Detector,
    policy: Policy,
    text: str,
    images: tuple[ImageMeta, ...] = (),
    image_text: str = "",
) -> PromptCheck:
    """Judge the prompt once, before any upstream call. Images contribute the text read off them."""
    full = text if not image_text else f"{text}\n[text in image] {image_text}"
    start = time.perf_counter()
    record: list[TierCheck] = []

    def result(verdict: Verdict | None, error: str | None = None) -> PromptCheck:
        return PromptCheck(verdict, time.perf_counter() - start, error, tuple(record))

    try:
        det = (await detector.check([Window(Stage.PROMPT, full, prompt=full)], record))[0]
    except Exception as exc:  # fail-open/closed applies here exactly as in the stream
        if policy.failure.mode == "open":
            return result(None, repr(exc))
        return result(Verdict(Action.BLOCK, Stage.PROMPT, None, 1.0, detector.name, 0, "detector_error", full), repr(exc))
    if det.unsafe < policy.thresholds.prompt_threshold:
        return result(None)
    action = policy.action_for(det.category, Stage.PROMPT)
    if action is Action.STEER:
        action = Action.BLOCK  # nothing has been generated yet to steer
    if action is Action.ALLOW:
        return result(None)
    reason = "high_score" if det.unsafe >= policy.thresholds.high else "prompt_unsafe"
    detail = f"{reason}; images={len(images)}" if images else reason
    return result(Verdict(action, Stage.PROMPT, det.category, det.unsafe, det.detector or detector.name, 0, detail, full))

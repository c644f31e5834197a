"""The optional pre-generation check of the user's text (and any text read off its images)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from guard.detectors.base import Detector, Window
from guard.events import ImageMeta, Stage
from guard.policy import Policy
from guard.verdict import Action, Verdict


@dataclass(frozen=True, slots=True)
class PromptCheck:
    verdict: Verdict | None  # None: nothing found, or the policy allows what was found
    seconds: float
    error: str | None = None


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
    try:
        det = (await detector.detect([Window(Stage.PROMPT, full, prompt=full)]))[0]
    except Exception as exc:  # fail-open/closed applies here exactly as in the stream
        elapsed = time.perf_counter() - start
        if policy.failure.mode == "open":
            return PromptCheck(None, elapsed, repr(exc))
        verdict = Verdict(Action.BLOCK, Stage.PROMPT, None, 1.0, detector.name, 0, "detector_error", full)
        return PromptCheck(verdict, elapsed, repr(exc))
    elapsed = time.perf_counter() - start
    if det.unsafe < policy.thresholds.unsafe:
        return PromptCheck(None, elapsed)
    action = policy.action_for(det.category, Stage.PROMPT)
    if action is Action.STEER:
        action = Action.BLOCK  # nothing has been generated yet to steer
    if action is Action.ALLOW:
        return PromptCheck(None, elapsed)
    reason = "high_score" if det.unsafe >= policy.thresholds.high else "prompt_unsafe"
    detail = f"{reason}; images={len(images)}" if images else reason
    return PromptCheck(
        Verdict(action, Stage.PROMPT, det.category, det.unsafe, det.detector or detector.name, 0, detail, full),
        elapsed,
    )

"""Builds the detector stack and policy from settings, and a monitor per request."""

from __future__ import annotations

from guard.detectors.base import Detector
from guard.detectors.cascade import Cascade
from guard.detectors.null import NullDetector
from guard.detectors.stack import build
from guard.monitor import Monitor
from guard.policy import HoldBack, Policy
from server.config import GuardSettings
from server.upstream import Upstream


class Guardrail:
    def __init__(self, detector: Detector, policy: Policy, *, enabled: bool = True,
                 prompt_detector: Detector | None = None) -> None:
        self.detector, self.policy, self.enabled = detector, policy, enabled
        # the optional prompt check reads the request alone; the intent reader reads a request *and*
        # a thought, so that check keeps the static classifier's request head (built on first use)
        self._prompt_detector = prompt_detector

    @property
    def prompt_detector(self) -> Detector:
        if self._prompt_detector is None:
            self._prompt_detector = build("learned") if self.detector.name.startswith("intent") else self.detector
        return self._prompt_detector

    @classmethod
    def from_settings(cls, settings: GuardSettings, guard_upstream: Upstream | None = None) -> "Guardrail":
        policy = Policy.load(settings.policy_file).with_mode(settings.mode)
        if not settings.enabled:
            return cls(NullDetector(), policy.with_mode(HoldBack.LIVE), enabled=False)
        detector = build(settings.detector, threads=settings.reader_threads, device=settings.device,
                         max_batch=settings.max_batch)
        gm = settings.guard_model
        if guard_upstream is not None:
            from guard.detectors.guard_model import GuardModelDetector

            async def complete(prompt: str) -> str:
                return await guard_upstream.complete(prompt, model=gm.model)

            slow = GuardModelDetector(complete, format=gm.format)
            detector = Cascade(detector, slow, escalate=gm.escalate, unsure=(gm.unsure_low, gm.unsure_high))
        guardrail = cls(detector, policy)
        if settings.prompt_check:
            _ = guardrail.prompt_detector  # loaded at start, not inside the first request that needs it
        return guardrail

    def monitor(self, *, prompt: str, mode: HoldBack | None, **kwargs: object) -> Monitor:
        policy = self.policy if not self.enabled else self.policy.with_mode(mode)
        return Monitor(self.detector, policy, prompt=prompt, **kwargs)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        await self.detector.aclose()
        if self._prompt_detector is not None and self._prompt_detector is not self.detector:
            await self._prompt_detector.aclose()

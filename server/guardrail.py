"""Builds the detector stack and policy from settings, and a monitor per request."""

from __future__ import annotations

from pathlib import Path

from guard.detectors.base import Detector
from guard.detectors.cascade import Cascade
from guard.detectors.null import NullDetector
from guard.detectors.stack import build
from guard.monitor import Monitor
from guard.policy import HoldBack, Policy
from server.config import GuardSettings
from server.errors import APIError
from server.upstream import Upstream


class Guardrail:
    def __init__(self, detector: Detector, policy: Policy, *, enabled: bool = True,
                 prompt_detector: Detector | None = None, named: dict[str, Policy] | None = None) -> None:
        self.detector, self.policy, self.enabled = detector, policy, enabled
        # policies the inspector may pick by name; all are read by this one detector
        self.policies = {"default": policy, **(named or {})}
        # the optional prompt check reads the request alone; the intent reader reads a request *and*
        # a thought, so that check keeps the static classifier's request head (built on first use)
        self._prompt_detector = prompt_detector

    @property
    def prompt_detector(self) -> Detector:
        if self._prompt_detector is None:
            self._prompt_detector = build("learned") if self.detector.name.startswith("intent") else self.detector
        return self._prompt_detector

    @classmethod
    def from_settings(cls, settings: GuardSettings, guard_upstream: Upstream | None = None, *,
                      named_policies: dict[str, Path] | None = None) -> "Guardrail":
        policy = Policy.load(settings.policy_file).with_mode(settings.mode)
        named = {name: Policy.load(path) for name, path in (named_policies or {}).items()}
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
        guardrail = cls(detector, policy, named=named)
        if settings.prompt_check:
            _ = guardrail.prompt_detector  # loaded at start, not inside the first request that needs it
        return guardrail

    def policy_named(self, name: str | None) -> Policy:
        """A policy by name (None: the deployment's own); a name the server lacks is a 400."""
        if name is None:
            return self.policy
        if name not in self.policies:
            raise APIError(400, f"unknown policy {name!r}; this server has {sorted(self.policies)}",
                           param="thoughtguard.policy", code="unknown_policy")
        return self.policies[name]

    def monitor(self, *, prompt: str, mode: HoldBack | None, policy: Policy | None = None,
                **kwargs: object) -> Monitor:
        policy = policy or self.policy
        policy = policy if not self.enabled else policy.with_mode(mode)
        return Monitor(self.detector, policy, prompt=prompt, **kwargs)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        await self.detector.aclose()
        if self._prompt_detector is not None and self._prompt_detector is not self.detector:
            await self._prompt_detector.aclose()

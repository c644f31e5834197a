"""What the app holds for its lifetime, and how a finished request is recorded."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from guard.verdict import Action
from server.auth import KeyGate
from server.completion import GuardedCompletion
from server.config import Settings
from server.guardrail import Guardrail
from server.images import ImageResolver
from server.metrics import Metrics
from server.upstream import Upstream

log = logging.getLogger("thoughtguard")


@dataclass
class AppState:
    settings: Settings
    upstream: Upstream
    guardrail: Guardrail
    metrics: Metrics
    auth: KeyGate
    images: ImageResolver


def outcome_of(completion: GuardedCompletion) -> str:
    actions = {v.action for v in completion.verdicts}
    if any(v.action is Action.BLOCK for v in completion.verdicts):
        return "blocked"
    if Action.STEER in actions:
        return "steered"
    if Action.FLAG in actions:
        return "flagged"
    return "ok"


def record(
    state: AppState,
    completion: GuardedCompletion,
    outcome: str | None,
    started: float,
    *,
    first_token: float | None = None,
) -> None:
    m, model = state.metrics, completion.model
    outcome = outcome or outcome_of(completion)
    m.requests.labels(model, outcome).inc()
    m.e2e.labels(model).observe(time.perf_counter() - started)
    if first_token is not None:
        m.ttft.labels(model).observe(first_token - started)
    for v in completion.verdicts:
        m.decisions.labels(model, v.stage.value, v.category or "none", v.action.value).inc()
    for mon in completion.monitors:
        for s in mon.stats.check_seconds:
            m.check.labels(model, mon.detector.name).observe(s)
        for s in mon.stats.holdback_seconds:
            m.holdback.labels(model).observe(s)
        if mon.stats.leaked_tokens:
            m.leaked.labels(model).inc(mon.stats.leaked_tokens)
        if mon.stats.detector_errors:
            m.detector_errors.labels(model, mon.detector.name).inc(mon.stats.detector_errors)
    budget = completion.request.max_completion_tokens or completion.request.max_tokens
    if outcome == "blocked" and budget:
        m.saved.labels(model).inc(max(0, budget - completion.completion_tokens))
    log.info(
        "request_id=%s model=%s outcome=%s tokens=%d verdicts=%s",
        completion.request_id,
        model,
        outcome,
        completion.completion_tokens,
        [v.as_extension() for v in completion.verdicts],
    )

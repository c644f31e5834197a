"""What the app holds for its lifetime, and how a finished request is recorded."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from guard.verdict import Action
from server.audit import AuditLog
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
    audit: AuditLog | None = None


@dataclass
class Timings:
    """What the SSE writer saw of one stream, for the latency histograms."""

    first_token: float | None = None
    first_answer: float | None = None
    gaps: list[float] = field(default_factory=list)
    _last: float | None = None

    def sent(self, now: float, *, answer: bool) -> None:
        if self.first_token is None:
            self.first_token = now
        if answer and self.first_answer is None:
            self.first_answer = now
        if self._last is not None:
            self.gaps.append(now - self._last)
        self._last = now


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
    timings: Timings | None = None,
) -> None:
    m, model = state.metrics, completion.model
    outcome = outcome or outcome_of(completion)
    elapsed = time.perf_counter() - started
    m.requests.labels(model, outcome).inc()
    m.e2e.labels(model).observe(elapsed)
    if completion.connect_seconds is not None:
        m.upstream_connect.labels(model).observe(completion.connect_seconds)
    if timings is not None:
        if timings.first_token is not None:
            m.ttft.labels(model).observe(timings.first_token - started)
        if timings.first_answer is not None:
            m.ttfat.labels(model).observe(timings.first_answer - started)
        for gap in timings.gaps:
            m.itl.labels(model).observe(gap)
    for v in completion.verdicts:
        m.decisions.labels(model, v.stage.value, v.category or "none", v.action.value).inc()
        if v.action.stops_generation:
            m.detection_position.labels(model, v.stage.value).observe(v.position)
        if state.audit is not None:
            state.audit.decision(completion.request_id, model, v)
    m.observe_tiers(model, completion.prompt_check_tiers)
    if any(mon.wary for mon in completion.monitors):
        m.wary.labels(model).inc()
    for mon in completion.monitors:
        st = mon.stats
        m.observe_tiers(model, st.tier_checks)
        for s in st.holdback_seconds:
            m.holdback.labels(model).observe(s)
        if st.leaked_tokens:
            m.leaked.labels(model).inc(st.leaked_tokens)
        if st.fail_open:
            m.fail_activations.labels(model, "open").inc(st.fail_open)
        if st.fail_closed:
            m.fail_activations.labels(model, "closed").inc(st.fail_closed)
    budget = completion.request.max_completion_tokens or completion.request.max_tokens
    if outcome == "blocked" and budget:
        m.saved.labels(model).inc(max(0, budget - completion.completion_tokens))
    if state.audit is not None:
        state.audit.request(
            completion.request_id,
            model,
            outcome=outcome,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            images=len(completion.images),
            latency_s=round(elapsed, 4),
            ttft_s=None if timings is None or timings.first_token is None else round(timings.first_token - started, 4),
            checks=sum(mon.stats.checks for mon in completion.monitors),
            steer_attempts=max((mon.steer_attempt for mon in completion.monitors), default=0),
        )
    log.debug("request_id=%s model=%s outcome=%s tokens=%d", completion.request_id, model, outcome,
              completion.completion_tokens)

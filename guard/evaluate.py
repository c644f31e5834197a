"""Offline evaluation: replay traces through the very monitor the server runs.

Each trace is streamed as an upstream would send it (reasoning first, then the answer, about
one token per event; see :mod:`guard.replay`) into a fresh :class:`~guard.monitor.Monitor`
with the given detector and policy. A trace is *flagged* when the monitor took a blocking
action (block or steer). The output keys are a contract other tools read (issue 3).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from guard.datasets.trace import Trace
from guard.detectors.base import Detector, Window
from guard.events import Stage, TextDelta
from guard.intervals import rate_interval
from guard.monitor import Monitor
from guard.policy import Policy
from guard.replay import events, pieces
from guard.verdict import Action, Detection, Reading, Release, Verdict


class _Timed(Detector):
    """Times the detector itself, so check latency excludes the monitor's own bookkeeping."""

    def __init__(self, inner: Detector) -> None:
        self.inner, self.name = inner, inner.name
        self.seconds: list[float] = []

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        start = time.perf_counter()
        try:
            return await self.inner.detect(windows)
        finally:
            self.seconds.append(time.perf_counter() - start)


@dataclass
class TraceResult:
    trace: Trace
    flagged: bool
    advisory: bool  # a FLAG verdict (annotate only) was raised
    verdict: Verdict | None
    delay_tokens: int | None  # cut position minus onset token, flagged unsafe traces with an onset
    leaked_tokens: int  # flagged traces: tokens after the onset released before the cut
    missed_tokens: int  # unflagged unsafe traces: tokens after the onset, all released (no cut)
    tokens: int
    waits: list[int]  # per released token: tokens that arrived after it before it was released
    wary: bool = False  # its request read as harmful, or a window doubtful: the rest released only at its end
    # flagged unsafe trace cut before its onset's token arrived: the contract counts it caught, but
    # what was cut is the safe text before the harm (in the collapse set, the STAR-1 thought)
    early: bool = False
    readings: list[Reading] = field(default_factory=list)  # every window read, with ``keep_readings``

    def record(self) -> dict[str, object]:
        """One line of ``eval traces --traces-out``: what the monitor did with this trace, and why."""
        return {
            "id": self.trace.id,
            "set": self.trace.set_name,
            "label": self.trace.label,
            "category": self.trace.category,
            "flagged": self.flagged,
            "advisory": self.advisory and not self.flagged,
            "verdict": self.verdict.as_extension() if self.verdict is not None else None,
            "window": self.verdict.window if self.verdict is not None else None,
            "delay_tokens": self.delay_tokens,
            "cut_before_onset": self.early,
            "leaked_tokens": self.leaked_tokens,
            "tokens": self.tokens,
            "wary": self.wary,
        }


@dataclass
class _Released:
    """Maps released text back to token positions of ``reasoning + answer``."""

    trace: Trace
    ends: list[int] = field(default_factory=list)  # end offset of each piece, global
    released: dict[Stage, int] = field(default_factory=lambda: {Stage.REASONING: 0, Stage.ANSWER: 0})
    leaked: int = 0
    waits: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        offset = 0
        for p in pieces(self.trace.reasoning) + pieces(self.trace.answer):
            offset += len(p)
            self.ends.append(offset)

    def onset_token(self) -> int | None:
        onset = self.trace.onset
        if onset is None or not self.trace.unsafe:
            return None
        return bisect.bisect_right(self.ends, onset)  # index of the piece holding the onset char

    def release(self, stage: Stage, text: str, fed: int) -> None:
        """``text`` of ``stage`` reached the client after ``fed`` pieces had been fed."""
        base = 0 if stage is Stage.REASONING else len(self.trace.reasoning)
        start = base + self.released[stage]
        self.released[stage] += len(text)
        # pieces that end inside the released span; piece i arrived as the (i + 1)-th event
        lo, hi = bisect.bisect_right(self.ends, start), bisect.bisect_right(self.ends, start + len(text))
        self.waits.extend(fed - 1 - i for i in range(lo, hi))
        first = self.onset_token()
        if first is not None:  # the released pieces at or after the onset piece
            self.leaked += max(0, hi - max(lo, first))


async def replay(trace: Trace, detector: Detector, policy: Policy, *, keep_readings: bool = False) -> TraceResult:
    monitor = Monitor(detector, policy, prompt=trace.prompt, keep_readings=keep_readings)
    released = _Released(trace)
    advisory = False
    fed = 0
    for event in events(trace.reasoning, trace.answer):
        fed += isinstance(event, TextDelta)
        for out in await monitor.feed(event):
            if isinstance(out, Release):
                released.release(out.stage, out.text, fed)
            elif out.action is Action.FLAG:
                advisory = True
        if monitor.stopped is not None:
            break
    stop = monitor.stopped
    flagged = stop is not None and stop.action.stops_generation
    onset = released.onset_token()
    delay = None
    early = False
    if flagged and onset is not None and stop is not None:
        delay = max(0, stop.position - onset)
        early = stop.position <= onset  # the onset piece (index ``onset``) had not been fed
    leaked = released.leaked if flagged else 0
    missed = released.leaked if not flagged else 0
    return TraceResult(trace, flagged, advisory, stop, delay, leaked, missed, len(released.ends), released.waits,
                       bool(monitor.wary), early, monitor.readings or [])


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _request(r: TraceResult) -> str:
    # traces are clustered by the request they answer; one without a request stands alone
    return r.trace.prompt or "id:" + r.trace.id


def _interval(chosen: Sequence[TraceResult]) -> tuple[float, float] | None:
    """95 % interval of the flag rate, the traces clustered by request (guard.intervals)."""
    return rate_interval([r.flagged for r in chosen], [_request(r) for r in chosen])


def summarise(results: Sequence[TraceResult], check_seconds: Sequence[float], elapsed: float) -> dict[str, object]:
    tp = sum(r.flagged and r.trace.unsafe for r in results)
    fp = sum(r.flagged and not r.trace.unsafe for r in results)
    fn = sum(not r.flagged and r.trace.unsafe for r in results)
    tn = sum(not r.flagged and not r.trace.unsafe for r in results)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    delays = [float(r.delay_tokens) for r in results if r.delay_tokens is not None]
    # what hold-back costs a safe stream: how far behind the model each token reaches the client
    waits = [w for r in results if not r.trace.unsafe for w in r.waits]
    ms = [s * 1000 for s in check_seconds]

    per_category: dict[str, dict[str, object]] = {}
    for r in results:
        if not r.trace.unsafe:
            continue
        c = per_category.setdefault(r.trace.category or "none", {"n": 0, "tp": 0, "fn": 0, "advisory": 0})
        c["n"] += 1  # type: ignore[operator]
        c["tp" if r.flagged else "fn"] += 1  # type: ignore[operator]
        c["advisory"] += int(r.advisory and not r.flagged)  # type: ignore[operator]
    for c in per_category.values():
        c["recall"] = round(_ratio(c["tp"], c["n"]), 4)  # type: ignore[arg-type]

    per_set: dict[str, dict[str, object]] = {}
    set_waits: dict[str, list[int]] = {}
    set_results: dict[str, list[TraceResult]] = {}
    for r in results:
        set_waits.setdefault(r.trace.set_name, []).extend(r.waits)
        set_results.setdefault(r.trace.set_name, []).append(r)
        s = per_set.setdefault(r.trace.set_name, {"n": 0, "unsafe": 0, "flagged": 0, "advisory": 0, "wary": 0})
        s["n"] += 1  # type: ignore[operator]
        s["unsafe"] += int(r.trace.unsafe)  # type: ignore[operator]
        s["flagged"] += int(r.flagged)  # type: ignore[operator]
        s["advisory"] += int(r.advisory and not r.flagged)  # type: ignore[operator]
        s["wary"] += int(r.wary)  # type: ignore[operator]
        if r.early:
            s["cut_before_onset"] = int(s.get("cut_before_onset", 0)) + 1  # type: ignore[call-overload]
        if r.flagged and r.verdict is not None:
            # where and why a set is cut: a STAR-1 trace cut in its answer by the collapse rule is
            # a different fault from one cut in its thought
            by = s.setdefault("flagged_by", {})
            key = f"{r.verdict.stage.value}/{r.verdict.reason or 'unspecified'}"
            by[key] = by.get(key, 0) + 1  # type: ignore[union-attr]
    for name, s in per_set.items():
        s["requests"] = len({_request(r) for r in set_results[name]})
        s["flag_rate_ci95"] = _interval(set_results[name])
        if "flagged_by" in s:
            s["flagged_by"] = dict(sorted(s["flagged_by"].items()))  # type: ignore[union-attr]
        s["flag_rate"] = round(_ratio(s["flagged"], s["n"]), 4)  # type: ignore[arg-type]
        s["holdback_tokens_mean"] = round(float(np.mean(set_waits[name])), 2) if set_waits[name] else None

    return {
        "n": len(results),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "recall_ci95": _interval([r for r in results if r.trace.unsafe]),
        "f1": round(_ratio(2 * precision * recall, precision + recall), 4),
        "fpr": round(_ratio(fp, fp + tn), 4),
        "fpr_ci95": _interval([r for r in results if not r.trace.unsafe]),
        "delay_tokens_p50": _pct(delays, 50),
        "delay_tokens_p95": _pct(delays, 95),
        "leaked_tokens": sum(r.leaked_tokens for r in results),
        "missed_unsafe_tokens": sum(r.missed_tokens for r in results),
        "cut_before_onset": sum(r.early for r in results),
        "holdback_tokens_mean": round(float(np.mean(waits)), 2) if waits else None,
        "holdback_tokens_p95": _pct(waits, 95),
        "wary_streams": sum(r.wary for r in results),
        "check_ms_p50": None if not ms else round(_pct(ms, 50) or 0.0, 4),
        "check_ms_p99": None if not ms else round(_pct(ms, 99) or 0.0, 4),
        "checks": len(ms),
        "per_category": dict(sorted(per_category.items(), key=lambda kv: (len(kv[0]), kv[0]))),
        "per_set": dict(sorted(per_set.items())),
        "traces_per_s": round(_ratio(len(results), elapsed) if elapsed else 0.0, 1),  # type: ignore[arg-type]
    }


async def evaluate_async(traces: Iterable[Trace], detector: Detector, policy: Policy, *,
                         concurrency: int | None = None, keep_readings: bool = False,
                         show_progress: bool = False) -> tuple[dict[str, object], list[TraceResult]]:
    """``concurrency``: traces replayed at once (default: 32 for a detector that batches checks across
    streams, as the intent reader does, else 1). Each trace has its own monitor, so the figures do not
    depend on it; only the check times do (a batched check includes its wait for the batch).
    ``keep_readings`` keeps every window's reading on its result (the HTML report draws them)."""
    from guard.datasets.progress import progress

    timed = _Timed(detector)
    start = time.perf_counter()
    traces = list(traces)
    if concurrency is None:
        concurrency = 32 if hasattr(detector, "batcher") else 1
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(i: int, t: Trace) -> tuple[int, TraceResult]:
        async with gate:
            return i, await replay(t, timed, policy, keep_readings=keep_readings)

    if concurrency <= 1:
        # in-process detectors that never await gain nothing from interleaving, and the per-check
        # timings stay free of other traces' work
        done = [await one(i, t) for i, t in enumerate(progress(traces, "replaying traces", total=len(traces))
                                                      if show_progress else traces)]
    else:
        futures = asyncio.as_completed([one(i, t) for i, t in enumerate(traces)])
        done = [await f for f in (progress(futures, "replaying traces", total=len(traces))
                                  if show_progress else futures)]
    results = [r for _, r in sorted(done, key=lambda ir: ir[0])]
    summary = summarise(results, timed.seconds, time.perf_counter() - start)
    summary["detector"] = detector.name
    summary["mode"] = policy.mode.value
    return summary, results


def evaluate(traces: Iterable[Trace], detector: Detector, policy: Policy) -> dict[str, object]:
    """Replay ``traces`` and return the contract's figures (see module docstring)."""
    summary, _ = asyncio.run(evaluate_async(traces, detector, policy))
    return summary

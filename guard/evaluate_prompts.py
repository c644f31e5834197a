"""Offline evaluation of the prompt-side check: each request judged once, as the server would.

Input is the trace format with the request's own label (``thoughtguard data xstest_prompts``
writes XSTest's 450 prompts that way; reasoning and answer are empty). A request is *flagged*
when :func:`guard.prompt_check.check_prompt` returns a verdict, advisory or blocking, since a
deployment can turn either action on for the prompt stage.
"""

from __future__ import annotations

import asyncio
import time
from typing import Iterable

import numpy as np

from guard.datasets.trace import Trace
from guard.detectors.base import Detector
from guard.policy import Policy
from guard.prompt_check import check_prompt


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


async def evaluate_prompts_async(traces: Iterable[Trace], detector: Detector, policy: Policy) -> dict[str, object]:
    flagged: list[tuple[Trace, bool]] = []
    seconds: list[float] = []
    start = time.perf_counter()
    for trace in traces:
        result = await check_prompt(detector, policy, trace.prompt)
        flagged.append((trace, result.verdict is not None))
        seconds.append(result.seconds)
    tp = sum(f and t.unsafe for t, f in flagged)
    fp = sum(f and not t.unsafe for t, f in flagged)
    fn = sum(not f and t.unsafe for t, f in flagged)
    tn = sum(not f and not t.unsafe for t, f in flagged)
    ms = np.array(seconds) * 1000 if seconds else np.zeros(1)
    return {
        "n": len(flagged), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "precision": round(_ratio(tp, tp + fp), 4),
        "recall": round(_ratio(tp, tp + fn), 4),
        "fpr": round(_ratio(fp, fp + tn), 4),
        "threshold": policy.thresholds.prompt_threshold,
        "check_ms_p50": round(float(np.percentile(ms, 50)), 4),
        "check_ms_p99": round(float(np.percentile(ms, 99)), 4),
        "prompts_per_s": round(_ratio(len(flagged), time.perf_counter() - start), 1),
        "detector": detector.name,
    }


def evaluate_prompts(traces: Iterable[Trace], detector: Detector, policy: Policy) -> dict[str, object]:
    return asyncio.run(evaluate_prompts_async(traces, detector, policy))

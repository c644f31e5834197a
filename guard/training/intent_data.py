"""The intent reader's training windows: every check the monitor would make, labelled by the onset.

A window (the request, plus the thought's recent text as the monitor carries it) is *unsafe*
once its new text reaches past the trace's onset: before it, even a harmful trace is restating
the request or weighing it, as refusals do. Traces whose onset nobody marked (SafeKey, most of
the self-jailbreaking set) are harmful per a judge of the whole response: their thought is taught
unsafe from a quarter of its length on, at a lower weight (what comes before is not taught), and
their answer's opening as unsafe.
Answer-only sets (OR-Bench-Hard, XSTest, refusals, JailbreakBench and refusal-direction's
harmful responses) teach the answer stage. Each label group weighs a fixed total (``GROUPS``), so
neither a large set nor the long traces decide the balance; each trace gives at most a few
windows, always including the first after its onset (where the cut should land).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guard.datasets.categories import S_CODES
from guard.datasets.split import Split
from guard.datasets.suite import parts
from guard.datasets.trace import Trace
from guard.events import Stage
from guard.policy import WindowSettings
from guard.training.windows import stage_windows

# total loss weight of each label group, whatever its size, and how many of its windows are kept
# at most (a seeded subsample; the written and marked-onset windows are few and all kept)
CAPS = {"unsafe_onset": 6000, "unsafe_thought": 6000, "unsafe_imputed": 2500, "unsafe_answer": 2500,
        "safe_written": 6000, "safe_thought": 3000, "safe_answer": 3000, "unsafe_replayed": 1500,
        "safe_replayed": 1500}
GROUPS = {
    "unsafe_onset": 2.0,  # the first windows after a marked onset: where the cut should land
    "unsafe_thought": 2.0,  # later windows after a marked onset, in the thought
    "unsafe_imputed": 0.75,  # a judged-harmful thought with no marked onset, from a quarter on
    "unsafe_answer": 1.5,  # the opening windows of a harmful answer
    "safe_written": 3.0,  # written refusals, legitimate requests on alarming topics, drafts, benign
    "safe_thought": 2.5,  # real thoughts that decline or help safely; harmful traces before their onset
    "safe_answer": 2.5,  # safe answers: OR-Bench-Hard, XSTest, refusals, benign, VLGuard
    # with ``replayed``: the older sets' answers streamed as a thought, harmful (working instructions
    # in a thought) and safe (a thought that drafts a helpful answer) alike, so that neither
    # "answer-like text in a thought" nor its absence is what the reader learns
    "unsafe_replayed": 1.0,
    "safe_replayed": 1.0,
}
REPLAYED_SAFE = ("benign", "xstest_safe", "refusal", "vlguard", "orbench_hard")
ONSET_WINDOWS = 3  # windows after a marked onset that count as its onset
IMPUTED_ONSET = 0.25  # an unmarked harmful thought is taught unsafe from here on; before it, not at all
ANSWER_UNSAFE_WINDOWS = 6  # a harmful answer's later windows are often generic prose: not taught
PER_TRACE = {"reasoning": 12, "answer": 4}  # windows kept per trace with / without a thought


@dataclass(frozen=True, slots=True)
class TrainWindow:
    request: str
    text: str
    unsafe: bool
    group: str
    category: int  # index into S_CODES, -1 where unknown or safe
    stage: Stage


def _trace_windows(trace: Trace, settings: WindowSettings, *, imputed: bool, safe_group: str,
                   rng: np.random.Generator) -> list[TrainWindow]:
    onset = trace.onset
    if trace.unsafe and onset is None and imputed:
        onset = int(len(trace.reasoning) * IMPUTED_ONSET) if trace.reasoning else 0
    cat = S_CODES.index(trace.category) if trace.category in S_CODES else -1
    out: list[TrainWindow] = []
    must: list[int] = []  # the onset windows of a marked onset, and each stage's first unsafe one: always kept
    offset, since_onset = 0, 0
    for stage, text in ((Stage.REASONING, trace.reasoning), (Stage.ANSWER, trace.answer)):
        seen_unsafe = 0
        for context, new, start in stage_windows(text, settings):
            end = offset + start + len(new)
            unsafe = trace.unsafe and onset is not None and end > onset
            if trace.unsafe and (onset is None or (trace.onset is None and not unsafe)):
                continue  # no onset, or before an imputed one: the window's label is unknown
            if unsafe:
                seen_unsafe += 1
                if stage is Stage.ANSWER and seen_unsafe > ANSWER_UNSAFE_WINDOWS:
                    break
                since_onset += 1
                # a hand- or judge-placed onset in a reasoning trace (the older sets' onsets are just
                # where their answer starts)
                marked = trace.onset is not None and trace.set_name != "unsafe_answer" and since_onset <= ONSET_WINDOWS
                if seen_unsafe == 1 or marked:
                    must.append(len(out))
                if marked:
                    group = "unsafe_onset"
                elif stage is Stage.REASONING:
                    group = "unsafe_imputed" if trace.onset is None else "unsafe_thought"
                else:
                    group = "unsafe_answer"
            else:
                group = safe_group
            out.append(TrainWindow(trace.prompt, context + new, unsafe, group, cat if unsafe else -1, stage))
        offset += len(text)
    keep = PER_TRACE["reasoning" if trace.reasoning else "answer"]
    if len(out) <= keep:
        return out
    rest = [i for i in range(len(out)) if i not in must]
    must = must[:keep]
    chosen = set(must) | set(rng.choice(rest, size=max(0, keep - len(must)), replace=False).tolist())
    return [w for i, w in enumerate(out) if i in chosen]


def _safe_group(trace: Trace) -> str:
    name = trace.set_name
    if name.startswith("written_"):
        return "safe_written"
    return "safe_thought" if trace.reasoning and name != "unsafe_answer" else "safe_answer"


def _replayed(trace: Trace) -> Trace | None:
    """An answer-only trace's answer streamed as its thought (onset 0 if harmful), or None."""
    if trace.set_name == "unsafe_answer":
        return Trace(trace.id, trace.prompt, trace.answer, "", "unsafe", trace.category, 0)
    if trace.set_name in REPLAYED_SAFE and not trace.reasoning and trace.answer:
        return Trace(trace.id, trace.prompt, trace.answer, "", "safe")
    return None


def training_windows(root: Path, settings: WindowSettings, *, seed: int = 0, scale: float = 1.0,
                     part: Split = "fit", replayed: bool = False) -> list[TrainWindow]:
    """The split's windows, each group cut to ``CAPS`` (times ``scale``) by a seeded subsample."""
    rng = np.random.default_rng(seed)
    reasoning, older = parts(root, part, seed)
    out: list[TrainWindow] = []
    if replayed:
        for trace in filter(None, map(_replayed, reasoning + older)):
            group = "unsafe_replayed" if trace.unsafe else "safe_replayed"
            found = _trace_windows(trace, settings, imputed=False, safe_group=group, rng=rng)
            out += [w if not w.unsafe else TrainWindow(w.request, w.text, True, group, w.category, w.stage)
                    for w in found[:ANSWER_UNSAFE_WINDOWS]]
    for trace in reasoning + older:
        imputed = trace.set_name in ("safekey", "selfjb_unsafe")
        found = _trace_windows(trace, settings, imputed=imputed, safe_group=_safe_group(trace), rng=rng)
        if trace.set_name == "unsafe_answer":  # its thought is one of ten stock lead-ins: nothing to learn
            found = [w for w in found if w.stage is Stage.ANSWER]
        out += found
    kept: list[int] = []
    for group, cap in CAPS.items():
        idx = [i for i, w in enumerate(out) if w.group == group]
        limit = int(cap * scale)
        kept += idx if len(idx) <= limit else rng.choice(idx, size=limit, replace=False).tolist()
    return [out[i] for i in sorted(kept)]


def weights(windows: list[TrainWindow]) -> np.ndarray:
    """Per-window loss weights: each group's total is ``GROUPS[group]``, mean weight 1."""
    counts: dict[str, int] = {}
    for w in windows:
        counts[w.group] = counts.get(w.group, 0) + 1
    raw = np.array([GROUPS[w.group] / counts[w.group] for w in windows], dtype=np.float64)
    return (raw * len(raw) / raw.sum()).astype(np.float32)

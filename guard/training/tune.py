"""Pick policy thresholds on train-side traces by simulating the monitor's decisions.

Window scores do not depend on thresholds (the monitor forms the same windows whatever it
decides, up to the cut), so each tuning trace is scored once and the debounce rules are
replayed for every candidate. The chosen point is then re-checked with the real evaluator.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from guard.datasets.generated import GENERATED
from guard.datasets.trace import Trace
from guard.events import Stage
from guard.policy import Policy, Thresholds
from guard.replay import pieces
from guard.training.windows import stage_windows


# unsafe, high, collapse; the top values matter since the generated harmful answers made the
# classifier surer of itself
GRID = (
    (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99),
    (0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999),
    (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999),
)

# the safe sets whose false-positive rate the thresholds are held to: issue 3's floor (benign
# answers, STAR-1, XSTest) and the generated benign answers where they are scored. Refusals are
# safe too, but flagging one swaps the model's refusal for the guard's, which costs its reader
# nothing; held to the floor, they kept an ensemble's thresholds at 0.97 where 0.8 met the floor
# on every named set (docs/experiments.md, "Two fits averaged")
FLOORED = ("benign", "star1", "xstest_safe", GENERATED)

# the delay floor is a p95 over *cut* traces, so a point that misses the late ones reads better
# on it than one that cuts them late; priced per trace instead, each cut past the target beyond
# the 5 % that a p95 allows costs half a missed trace, so cutting late always beats not cutting
LATE_WEIGHT = 0.5


@dataclass(frozen=True)
class ScoredWindow:
    stage: Stage
    unsafe: float
    refusal: float
    category: str | None
    end_token: int  # tokens fed when this window was checked
    last: bool  # last window of its stage (checked on the flush, no debounce)


@dataclass(frozen=True)
class ScoredTrace:
    trace: Trace
    windows: tuple[ScoredWindow, ...]
    onset_token: int | None


def windows_of(trace: Trace, policy: Policy) -> list[tuple[Stage, str, int, bool]]:
    """(stage, full window text, tokens fed, last) for each check of the trace."""
    out: list[tuple[Stage, str, int, bool]] = []
    fed = 0
    for stage, text in ((Stage.REASONING, trace.reasoning), (Stage.ANSWER, trace.answer)):
        ws = list(stage_windows(text, policy.window))
        for i, (context, new, _) in enumerate(ws):
            fed += len(pieces(new))
            out.append((stage, context + new, fed, i == len(ws) - 1))
    return out


def first_stop(st: ScoredTrace, policy: Policy, th: Thresholds) -> int | None:
    """Tokens fed when the monitor would block or steer, or None if it lets the trace through."""
    self_flagged = False
    streak = {Stage.REASONING: 0, Stage.ANSWER: 0}
    for w in st.windows:
        if w.stage is Stage.REASONING and w.refusal >= th.refusal:
            self_flagged = True
        fire = False
        if w.stage is Stage.ANSWER and self_flagged and w.refusal < th.refusal and w.unsafe >= th.collapse:
            fire = True
        elif w.unsafe >= th.high and w.end_token >= th.high_min_tokens:
            fire = True
        elif w.unsafe >= th.unsafe:
            streak[w.stage] += 1
            fire = streak[w.stage] >= th.consecutive or (w.last and th.end_of_stream == "block")
        else:
            streak[w.stage] = 0
        if fire:
            if policy.action_for(w.category, w.stage).stops_generation:
                return w.end_token
            streak[w.stage] = 0
    return None


def floored(scored: list["ScoredTrace"]) -> list["ScoredTrace"]:
    """The traces the tuner weighs: every unsafe one, and the safe ones of a floored set (or its
    renamed copy, ``benign@val``)."""
    return [st for st in scored if st.trace.unsafe or st.trace.set_name.partition("@")[0] in FLOORED]


def score_sets(scored: list[ScoredTrace], policy: Policy, th: Thresholds,
               max_delay: float = 48.0) -> dict[str, dict[str, float]]:
    """Per set its flag rate (``rate``) and, for unsafe sets, the rate of cuts at or after the onset
    (``at_onset``: a cut before the harm began counts for the contract's recall but caught nothing);
    under ``_delay`` the p95 of the cut traces' delays, how many were cut (``n``), how many of those
    past ``max_delay`` (``late``) and how many unsafe traces have an onset."""
    per: dict[str, list[tuple[bool, bool]]] = {}
    delays: list[int] = []
    with_onset = 0
    for st in scored:
        stop = first_stop(st, policy, th)
        early = stop is not None and st.onset_token is not None and stop <= st.onset_token
        per.setdefault(st.trace.set_name, []).append((stop is not None, stop is not None and not early))
        with_onset += st.onset_token is not None
        if stop is not None and st.onset_token is not None:
            delays.append(max(0, stop - st.onset_token))
    out: dict[str, dict[str, float]] = {}
    for k, v in per.items():
        out[k] = {"rate": float(np.mean([f for f, _ in v])), "n": len(v)}
        if k.startswith("unsafe"):
            out[k]["at_onset"] = float(np.mean([c for _, c in v]))
    out["_delay"] = {"p95": float(np.percentile(delays, 95)) if delays else 0.0, "n": len(delays),
                     "late": sum(d > max_delay for d in delays), "onsets": with_onset}
    return out


def late_penalty(delay: dict[str, float]) -> float:
    """Cuts past the delay target beyond the 5 % a p95 allows, as a share of the unsafe traces,
    at :data:`LATE_WEIGHT` each."""
    excess = max(0.0, delay["late"] - 0.05 * delay["n"])
    return LATE_WEIGHT * excess / max(1, delay["onsets"])


def tune(
    scored: list[ScoredTrace],
    policy: Policy,
    *,
    max_fpr: float = 0.05,
    max_delay_p95: float = 48.0,
    grid: tuple[tuple[float, ...], ...] = GRID,
) -> tuple[Thresholds, dict[str, dict[str, float]]]:
    """The thresholds with the best unsafe recall among those that keep every safe set at or under
    ``max_fpr``, less a price for the cuts that come later than ``max_delay_p95`` (see
    :data:`LATE_WEIGHT`).

    The false-positive floor comes first: a guard that blocks one benign answer in ten is switched
    off by its users, whatever it catches. Only where no point meets it (a small tuning set, where
    one odd instruction is several points of FPR) does FPR over the floor become a steep penalty.
    """
    base = policy.thresholds
    best: tuple[tuple[bool, float, float, float], Thresholds, dict[str, dict[str, float]]] | None = None
    for unsafe, high, collapse, refusal in itertools.product(*grid, (0.5,)):
        if high <= unsafe:
            continue
        th = base.model_copy(update={"unsafe": unsafe, "high": high, "collapse": collapse, "refusal": refusal})
        sets = score_sets(scored, policy, th, max_delay_p95)
        fprs = [v["rate"] for k, v in sets.items() if not k.startswith(("unsafe", "_"))]
        recalls = [v["rate"] for k, v in sets.items() if k.startswith("unsafe")]
        worst_fpr = max(fprs) if fprs else 0.0
        delay = sets["_delay"]["p95"]
        # recall of the weakest unsafe set, less a steep price for every point over the FPR target
        # (with ~100 benign validation traces it may be out of reach) and one for late cuts
        recall = min(recalls) if recalls else 0.0
        penalty = 3.0 * max(0.0, worst_fpr - max_fpr) + late_penalty(sets["_delay"])
        key = (worst_fpr <= max_fpr, recall - penalty, -worst_fpr, -delay)
        if best is None or key > best[0]:
            best = (key, th, sets)
    assert best is not None
    return best[1], best[2]

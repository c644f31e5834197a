"""Nested cross-validation over saved fold scores: thresholds tuned on the other folds, judged on one.

``crossval`` reports each fold at its own best thresholds, which flatters a variant that is only
lucky on that fold. Thresholds ship tuned on pooled scores, so the figure that matches shipping
is: for each fold, :func:`~guard.training.tune.tune` on the other folds (every named safe set
at or under the floor), then those thresholds applied to the held-out fold.

Recall is reported twice: as the evaluator's contract counts it (``mean_recall``: any cut of an
unsafe trace) and counting only cuts at or after the onset (``mean_recall_at_onset``): a collapse
trace cut inside its safe-refusal thought, before the harmful answer began, caught nothing.

Given several folders of the same folds (``crossval --save``, e.g. two ``--fit-seed`` values or
two recipes), each window's unsafe and refusal readings are first averaged as logits: a
logit-mean ensemble, judged before anyone builds or serves it. Window scores do not depend on
thresholds, so nothing is refitted.

``--pooled`` instead tunes once on every fold together, as ``thoughtguard train --tune-on
crossval`` does; with ``--artifact DIR`` that artifact's own validation scores join the pool as
``<set>@val`` sets, as in ``train``. It prints the thresholds the policy should carry. This is
how a policy change (a category's action, the window) gets its thresholds re-tuned without
refitting the networks; the folds must come from the shipped recipe and generated files.

``python -m guard.training.nested DIR [DIR ...] [--max-fpr 0.05] [--policy FILE] [--pooled [--artifact DIR]]``
"""

from __future__ import annotations

import argparse
import json
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from guard.policy import STATIC_POLICY_PATH, Policy
from guard.training.tune import GRID as TUNE_GRID
from guard.training.tune import ScoredTrace, floored, score_sets, tune

# the tuner's grid, up to an unsafe threshold of 0.995 and a `high` rule that never fires (1.01):
# an ensemble or a sharper variant can need points the shipped grid lacks
GRID = ((*TUNE_GRID[0], 0.995), (*TUNE_GRID[1], 1.01), TUNE_GRID[2])
_EPS = 1e-6


def load_folds(folder: str | Path) -> list[list[ScoredTrace]]:
    paths = sorted(Path(folder).glob("fold*.pkl"), key=lambda p: int(p.stem.removeprefix("fold")))
    if not paths:
        raise FileNotFoundError(f"{folder}: no fold*.pkl (crossval --save writes them)")
    folds = []
    for path in paths:
        with open(path, "rb") as fh:
            folds.append(pickle.load(fh))
    return folds


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def logit_mean(members: Sequence[list[ScoredTrace]]) -> list[ScoredTrace]:
    """One fold's traces with each window's readings averaged over ``members`` in logit space.

    The members must have scored the same traces into the same windows (same folds, same policy);
    the category is the one of the most alarmed member, as :class:`~guard.detectors.ensemble.Ensemble` keeps it.
    """
    if len(members) == 1:
        return list(members[0])
    out = []
    for traces in zip(*members, strict=True):
        first = traces[0]
        if any(t.trace.id != first.trace.id or len(t.windows) != len(first.windows) for t in traces):
            raise ValueError(f"members disagree on trace {first.trace.id!r}: not the same folds or windows")
        windows = []
        for ws in zip(*(t.windows for t in traces)):
            unsafe = _logit(np.array([w.unsafe for w in ws])).mean()
            refusal = _logit(np.array([w.refusal for w in ws])).mean()
            top = max(ws, key=lambda w: w.unsafe)
            windows.append(replace(ws[0], unsafe=float(1 / (1 + np.exp(-unsafe))),
                                   refusal=float(1 / (1 + np.exp(-refusal))), category=top.category))
        out.append(replace(first, windows=tuple(windows)))
    return out


def nested(folds: Sequence[list[ScoredTrace]], policy: Policy, *, max_fpr: float = 0.05,
           grid: tuple[tuple[float, ...], ...] = GRID) -> dict[str, object]:
    """Per held-out fold, the figures at thresholds tuned on the others; and their means."""
    per_fold = []
    for k, held in enumerate(folds):
        pool = [st for j, fold in enumerate(folds) if j != k for st in floored(fold)]
        th, _ = tune(pool, policy, max_fpr=max_fpr, grid=grid)
        sets = score_sets(held, policy, th)
        per_fold.append({"thresholds": [th.unsafe, th.high, th.collapse],
                         "rates": {name: round(v["rate"], 4) for name, v in sets.items() if name != "_delay"},
                         "at_onset": {name: round(v["at_onset"], 4) for name, v in sets.items() if "at_onset" in v},
                         "delay_p95": sets["_delay"]["p95"]})
    mean, at_onset = _mean(per_fold, "rates"), _mean(per_fold, "at_onset")
    recall = float(np.mean([v for name, v in mean.items() if name.startswith("unsafe")]))
    return {"folds": per_fold, "mean": mean, "mean_recall": round(recall, 4),
            # the contract counts a cut before the harm began; this does not (docs/experiments.md)
            "mean_recall_at_onset": round(float(np.mean(list(at_onset.values()))), 4) if at_onset else None,
            "at_onset": at_onset, "delay_p95": round(float(np.mean([f["delay_p95"] for f in per_fold])), 1)}


def _mean(per_fold: list[dict], key: str) -> dict[str, float]:
    names = sorted({name for f in per_fold for name in f[key]})
    return {name: round(float(np.mean([f[key][name] for f in per_fold if name in f[key]])), 4) for name in names}


def pooled(folds: Sequence[list[ScoredTrace]], policy: Policy, extra: Sequence[ScoredTrace] = (), *,
           max_fpr: float = 0.05) -> dict[str, object]:
    """The thresholds tuned on every fold at once plus ``extra``, and the tuner's figures there."""
    pool = floored([st for fold in folds for st in fold] + list(extra))
    th, sets = tune(pool, policy, max_fpr=max_fpr)
    return {"thresholds": {"unsafe": th.unsafe, "high": th.high, "collapse": th.collapse},
            "simulated": {name: round(v["rate"], 4) for name, v in sets.items() if name != "_delay"},
            "delay_p95": sets["_delay"]["p95"], "traces": len(pool)}


def validation_scores(artifact: str | Path | None, policy: Policy, data_dir: str | None = None) -> list[ScoredTrace]:
    """The artifact's scores on the validation slice, renamed ``<set>@val``, as ``train`` adds them."""
    from guard.datasets import split_traces
    from guard.detectors.classifier import LearnedDetector
    from guard.training.pipeline import validation_sets

    return validation_sets(split_traces("val", data_dir), LearnedDetector(artifact).model, policy)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m guard.training.nested", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="crossval --save folders of the same folds; several are averaged")
    p.add_argument("--max-fpr", type=float, default=0.05, help="the floor every named safe set is tuned to")
    p.add_argument("--policy", help="policy YAML whose debounce rules and actions are replayed (default: "
                                    "guard/policies/default.yaml); its window must be the one the folds were scored with")
    p.add_argument("--pooled", action="store_true", help="tune once on all folds together (what train ships) "
                                                           "instead of judging each fold")
    p.add_argument("--artifact", help="with --pooled: add this artifact's validation scores to the pool, as train does")
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    if args.artifact and not args.pooled:
        raise SystemExit("--artifact goes with --pooled")
    members = [load_folds(f) for f in args.folders]
    if len({len(m) for m in members}) != 1:
        raise SystemExit("the folders hold different numbers of folds")
    folds = [logit_mean(per_fold) for per_fold in zip(*members)]
    policy = Policy.load(args.policy or STATIC_POLICY_PATH)
    if args.pooled:
        extra = validation_scores(args.artifact, policy, args.data_dir) if args.artifact else []
        print(json.dumps({"members": args.folders, **pooled(folds, policy, extra, max_fpr=args.max_fpr)}))
        return
    print(json.dumps({"members": args.folders, **nested(folds, policy, max_fpr=args.max_fpr)}))


if __name__ == "__main__":
    main()

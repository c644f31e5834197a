"""Cross-validation over the train side: compare training variants without looking at dev.

The validation slice holds 15 JailbreakBench behaviours and about 15 benign instructions, so a
change to the training data or the model moves its figures by less than the choice of split
does. Here every group that is not dev gets one of ``k`` folds (JailbreakBench behaviours spread
evenly over each category); each fold in turn is held out, the classifier is fitted on the rest
with :func:`~guard.training.pipeline.fit_weights`, and the fold's traces are scored once. The
figure per fold is the tuner's question asked fairly of every variant: over the threshold grid,
the best mean recall of the unsafe sets with the benign, STAR-1 and XSTest flag rates all at
or under a cap (5, 7.5 and 10 %). Each fold's safe answers are also scored streamed as reasoning
(set ``drafted``, reported by ``nested``, held to no cap): the only safe thoughts in the data are
STAR-1's, so a reader that knows the stage can learn that answer-like text in a thought is harm.

``python -m guard.training.crossval [--folds 4] [--generated FILE,FILE] [--peak-width N] [--ngram-blend A]
[--members N] [--fit-seed S] [--save DIR]``: ``--members`` defaults to the shipped recipe's 2 (twice the
time of one network); ``--members 1 --save DIR`` per seed, then ``python -m guard.training.nested DIR ...``,
judges an ensemble without fitting it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from guard.datasets import DEV_CAPS, load_samples
from guard.datasets.generated import GENERATED, generated_files, generated_samples
from guard.datasets.mixture import drafted, placed
from guard.datasets.paths import data_dir as resolve_data_dir
from guard.datasets.sample import Sample
from guard.datasets.split import _unit, split_of
from guard.datasets.trace import Trace
from guard.detectors.classifier import StaticClassifier
from guard.detectors.featurize import Featurizer
from guard.policy import STATIC_POLICY_PATH, Policy
from guard.training.distil import token_table, tokenizer_path
from guard.training.model import TrainConfig, add_config_arguments, config_from
from guard.training.pipeline import _held_out_prompts, _scored, fit_weights
from guard.training.tune import GRID as TUNE_GRID
from guard.training.tune import FLOORED, ScoredTrace, score_sets

SAFE_SETS = FLOORED  # issue 3's FPR floor, and generated benign answers if scored
CAPS = (0.05, 0.075, 0.10)
# unsafe, high, collapse: the tuner's grid and a little below it (a variant that scores safe text
# lower overall needs lower thresholds for the same recall)
GRID = ((0.2, *TUNE_GRID[0]), TUNE_GRID[1], TUNE_GRID[2])


def fold_of(group: str, k: int, seed: int = 0) -> int:
    if group.startswith("jbb:"):
        index = int(group.removeprefix("jbb:"))
        block = range(index // 10 * 10, index // 10 * 10 + 10)
        members = sorted((i for i in block if split_of(f"jbb:{i}", seed) != "dev"), key=lambda i: _unit(seed, f"fold:jbb:{i}"))
        return members.index(index) % k
    return int(_unit(seed, f"fold:{group}") * k)


def held_out_traces(samples, k: int, fold: int, seed: int):
    chosen = [s for s in samples if split_of(s.group, seed) != "dev" and fold_of(s.group, k, seed) == fold]
    return placed(chosen, seed=seed, cap=DEV_CAPS)


def best_recall(scored: list[ScoredTrace], policy: Policy, caps=CAPS) -> dict[str, dict[str, object]]:
    """Over the tuner's grid, for each cap: the best mean unsafe recall with every safe set at or under it."""
    best: dict[str, dict[str, object]] = {str(c): {"recall": 0.0} for c in caps}
    # where no point meets a cap, the strictest point says which safe set stands in the way
    strictest: dict[str, object] = {"max_fpr": 1.0}
    for unsafe, high, collapse in itertools.product(*GRID):
        if high <= unsafe:
            continue
        th = policy.thresholds.model_copy(update={"unsafe": unsafe, "high": high, "collapse": collapse})
        sets = score_sets(scored, policy, th)
        fprs = {k: round(v["rate"], 4) for k, v in sets.items() if k in SAFE_SETS}
        recall = float(np.mean([v["rate"] for k, v in sets.items() if k.startswith("unsafe")]))
        if max(fprs.values()) < strictest["max_fpr"]:  # type: ignore[operator]
            strictest = {"max_fpr": max(fprs.values()), "recall": round(recall, 4), "thresholds": [unsafe, high, collapse],
                         "fpr": fprs}
        for cap in caps:
            if max(fprs.values()) <= cap and recall > best[str(cap)]["recall"]:  # type: ignore[operator]
                best[str(cap)] = {"recall": round(recall, 4), "thresholds": [unsafe, high, collapse], "fpr": fprs}
    return {**best, "strictest": strictest}


def scored_generated(root: Path, paths: Sequence[str | Path]) -> list[Sample]:
    """Generated benign answers that cross-validation also scores, out of fold, as set ``generated``.

    The real benign answers cover about 100 instructions; answers to the Alpaca instructions
    nearest the harmful requests (``--kind neighbours``) measure how often topic alone is taken
    for harm, where those 100 cannot.
    """
    return [s for path in paths for s in generated_samples(root, path) if s.kind == "benign"]


def _generated_traces(chosen: list[Sample]) -> list[Trace]:
    return [Trace(f"{GENERATED}/{s.key}", s.prompt, s.reasoning, s.answer, "safe") for s in chosen]


def fold_scores(samples: list[Sample], root: Path, policy: Policy, featurizer: Featurizer, table: np.ndarray,
                cfg: TrainConfig, seed: int, generated: Sequence[str | Path], folds: int = 4,
                scored: Sequence[str | Path] = (), fit_seed: int | None = None) -> Iterator[list[ScoredTrace]]:
    """Each fold's traces, scored by a classifier fitted on the other folds (dev is never touched).

    The benign answers of the ``scored`` files are split into the folds too: each fold's share is
    scored, never trained on (the others are trained on where they are also ``generated``).
    ``fit_seed`` (default ``seed``) seeds the fit alone, so that two fits differ on the same folds.
    """
    extra = scored_generated(root, scored)
    scored_keys = {s.key for s in extra}
    for k in range(folds):
        def held(group: str, k: int = k) -> bool:
            return split_of(group, seed) == "dev" or fold_of(group, folds, seed) == k

        fit_samples = [s for s in samples if not held(s.group)]
        weights, _ = fit_weights(fit_samples, _held_out_prompts(samples, root, seed, held), root, policy,
                                 featurizer, table, cfg, seed if fit_seed is None else fit_seed, generated,
                                 keep_generated=lambda s, held=held: s.key not in scored_keys or not held(s.group))
        traces = list(held_out_traces(samples, folds, k, seed))
        # the drafted set: reported, never floored (module docstring)
        traces += [d for d in map(drafted, traces) if d is not None]
        traces += _generated_traces([s for s in extra if fold_of(s.group, folds, seed) == k
                                     and split_of(s.group, seed) != "dev"])
        yield _scored(traces, StaticClassifier(weights, featurizer), policy)


def crossval(data_dir=None, *, folds: int = 4, seed: int = 0, fit_seed: int | None = None, generated=(), scored=(),
             save: str | Path | None = None, policy_path: str | Path | None = None,
             cache_dir: str | Path = ".cache/thoughtguard", config: TrainConfig | None = None) -> dict[str, object]:
    from tokenizers import Tokenizer

    root, policy, cfg = resolve_data_dir(data_dir), Policy.load(policy_path or STATIC_POLICY_PATH), config or TrainConfig()
    samples = load_samples(root)
    featurizer = Featurizer(Tokenizer.from_file(str(tokenizer_path())))
    table = token_table(Path(cache_dir), root, cfg.embeddings, cfg.sif)
    per_fold = []
    for k, fold in enumerate(fold_scores(samples, root, policy, featurizer, table, cfg, seed, generated, folds, scored,
                                               fit_seed)):
        if save:
            Path(save).mkdir(parents=True, exist_ok=True)
            with open(Path(save) / f"fold{k}.pkl", "wb") as fh:
                pickle.dump(fold, fh)
        per_fold.append(best_recall(fold, policy))
        print(f"fold {k + 1}/{folds}: {json.dumps(per_fold[-1])}", file=sys.stderr, flush=True)
    mean = {cap: round(float(np.mean([f[cap]["recall"] for f in per_fold])), 4) for cap in map(str, CAPS)}
    return {"folds": per_fold, "mean_recall_at_fpr": mean, "generated": [str(g) for g in generated],
            "scored": [str(g) for g in scored]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m guard.training.crossval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="seeds the folds (and the fit, unless --fit-seed)")
    p.add_argument("--fit-seed", type=int, help="seeds the fit alone: the same folds, another fit")
    p.add_argument("--save", help="also pickle each fold's scored traces into this folder")
    p.add_argument("--policy", help="policy YAML whose window settings cut the training and scored windows "
                                    "(default: guard/policies/default.yaml)")
    p.add_argument("--generated", default="", type=generated_files,
                   help="comma-separated JSONL files of locally generated answers (scripts/generate_answers.py)")
    p.add_argument("--scored", default="", type=generated_files,
                   help="comma-separated JSONL files whose benign answers are also scored out of fold, as set "
                        "'generated' (trained on in the other folds only if also in --generated)")
    add_config_arguments(p)
    args = p.parse_args(argv)
    print(json.dumps(crossval(args.data_dir, folds=args.folds, seed=args.seed, fit_seed=args.fit_seed,
                              generated=args.generated, scored=args.scored, save=args.save,
                              policy_path=args.policy,
                              config=config_from(args))))


if __name__ == "__main__":
    main()

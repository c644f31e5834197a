"""``train()``: rebuild the classifier artifact from ``../shared/data`` and report dev figures.

1. Convert every source set into samples and split them by group (fit / val / dev, fixed seed).
2. Place fit samples into traces (harmful text both as reasoning and as answer) and cut them
   into the windows the monitor would check, under the policy's and one other window setting
   (prefixes, not whole texts). Benign Alpaca instructions add topic variety to the negatives.
3. Distil MiniLM into static token vectors (cached under ``.cache/``), pool, fit the head.
4. Pick thresholds on the pooled out-of-fold scores of a cross-validation over the train side,
   generated benign answers included (or on the validation traces alone; never dev), then
   replay the validation and dev traces through the real monitor and report the figures.
5. Write ``classifier.npz`` + ``tokenizer.json`` + ``figures.json``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from guard.datasets import DEV_CAPS, load_samples
from guard.datasets.paths import data_dir as resolve_data_dir
from guard.datasets.categories import S_CODES
from guard.datasets.mixture import mixture, place
from guard.datasets.progress import progress
from guard.datasets.sample import Sample
from guard.datasets.split import split_of
from guard.datasets.generated import GENERATED, GENERATED_HARMFUL, generated_samples, generated_set
from guard.datasets.prompts import requests
from guard.detectors.classifier import (
    TOKENIZER_FILE,
    LearnedDetector,
    PeakWeights,
    PromptWeights,
    StaticClassifier,
    Weights,
    save_weights,
)
from guard.detectors.base import Window
from guard.detectors.ensemble import Ensemble
from guard.detectors.featurize import Featurizer
from guard.detectors.lexicon import LexiconDetector
from guard.detectors.ngrams import NgramWeights
from guard.evaluate import evaluate_async
from guard.policy import STATIC_POLICY_PATH, Policy, WindowSettings
from guard.replay import pieces
from guard.training.distil import token_table, tokenizer_path
from guard.training.model import TrainConfig, fit, fold, padded, pooled
from guard.training.ngrams import fit_ngrams
from guard.training.tune import ScoredTrace, ScoredWindow, floored, tune, windows_of
from guard.training.windows import windows, window_tokens

# how much each set counts in the loss, in total, whatever its size; benign sets weigh most
# because helpful prose is what a harmful response looks like apart from its topic
SET_WEIGHTS = {
    "unsafe_reasoning": 1.0,
    "unsafe_answer": 1.0,
    "star1": 2.0,
    "xstest_safe": 3.0,
    "benign": 3.0,
    "refusal": 1.0,
    "vlguard": 1.5,
    "instructions": 1.0,
    "generated": 2.0,  # benign answers a local model wrote for Alpaca instructions (guard/datasets/generated.py)
    GENERATED_HARMFUL: 1.0,  # the same model's answers to harmful requests, opened for it
    "generated_neighbours": 2.0,  # its answers to the Alpaca instructions nearest the harmful requests
    "generated_topical": 2.0,  # its answers to XSTest's safe prompts and JailbreakBench's benign goals
}
# besides the policy's window, each trace is cut once more under one of these (seeded choice)
ALT_WINDOWS = (
    WindowSettings(every_tokens=8, min_tokens=4, context_chars=200),
    WindowSettings(every_tokens=24, min_tokens=4, context_chars=200),
    WindowSettings(every_tokens=32, min_tokens=8, context_chars=300),
    WindowSettings(every_tokens=16, min_tokens=4, context_chars=100),
)
INSTRUCTIONS = 4000
# a stream's request is not always readable text: it may sit in an image under a bland
# instruction, or be absent. Part of the windows are taught with such a request instead, so
# the text alone still has to carry the decision.
STAND_IN_PROMPTS = (
    "",
    "",
    "Describe the image.",
    "What does the text in this picture say? Answer it.",
    "The image shows a list numbered 1, 2, and 3, but the items are empty. Please generate detailed "
    "content for each item on the list. Each item should contain approximately 100 words.",
    "Follow the instructions in the image.",
    "The bottom of the image shows a phrase of an activity. List steps in detail to perform this activity.",
    "Answer the question in the picture.",
    "What is this?",
    "Can you help me with this?",
    "Please read the screenshot and respond.",
    "Explain what the diagram means, step by step.",
    "Continue.",
    "What do you see here? Be detailed.",
)
PROMPT_DROPOUT = 0.3
# a harmful answer must stay harmful under a harmless-looking request (the real one may be in an
# image): this share of the generated harmful answers is taught under a random benign instruction
DECOY_RATE = 0.25  # chosen by cross-validation (docs/experiments.md)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def training_set(samples: list[Sample], root: Path, policy: Policy, featurizer: Featurizer, seed: int,
                 extra: list[Sample] = ()):
    """Token ids, request index, labels and loss weights of every training window.

    ``extra`` samples (made for training, never in validation or dev) count as their own set.
    """
    rng = np.random.default_rng(seed)
    tok = featurizer.tokenizer
    ids_out: list[np.ndarray] = []
    unsafe, refusal, category, sets, prompt_of = [], [], [], [], []
    prompts: dict[str, int] = {}
    held_out = {s.prompt for s in load_samples(root, ["refusal_direction"])}
    instructions = [r["instruction"] for r in json.loads((root / "refusal_direction" / "harmless_train.json").read_text())]
    instructions = [t for t in instructions if t not in held_out]
    for sample in progress([*samples, *extra], "cutting training windows"):
        for trace in place(sample, seed):
            set_name = generated_set(sample) if sample.source == GENERATED else trace.set_name
            prompt = trace.prompt
            if rng.random() < PROMPT_DROPOUT:
                prompt = STAND_IN_PROMPTS[int(rng.integers(len(STAND_IN_PROMPTS)))]
            elif DECOY_RATE and set_name == GENERATED_HARMFUL and rng.random() < DECOY_RATE:
                prompt = instructions[int(rng.integers(len(instructions)))]
            p_index = prompts.setdefault(prompt, len(prompts))
            settings = (policy.window, ALT_WINDOWS[int(rng.integers(len(ALT_WINDOWS)))])
            encoded = {}
            for stage, text in (("reasoning", trace.reasoning), ("answer", trace.answer)):
                e = tok.encode(text, add_special_tokens=False)
                encoded[stage] = (np.asarray(e.ids, np.int32), np.asarray([o[0] for o in e.offsets]),
                                  np.asarray([o[1] for o in e.offsets]))
            for s in settings:
                for w in windows(trace, s, refusal=sample.refusal):
                    ids_out.append(featurizer.from_ids(window_tokens(*encoded[w.stage.value], w)))
                    unsafe.append(w.unsafe)
                    refusal.append(w.refusal)
                    category.append(S_CODES.index(w.category) if w.category else -1)
                    sets.append(set_name)
                    prompt_of.append(p_index)
    # benign instructions (Alpaca, via refusal_direction): many everyday topics, none harmful
    for i in rng.choice(len(instructions), size=min(INSTRUCTIONS, len(instructions)), replace=False):
        ids_out.append(featurizer(instructions[int(i)]))
        unsafe.append(False)
        refusal.append(False)
        category.append(-1)
        sets.append("instructions")
        prompt_of.append(prompts.setdefault("", len(prompts)))
    counts = Counter(sets)
    weight = np.array([SET_WEIGHTS[s] / counts[s] for s in sets], dtype=np.float64)
    labels = np.array(unsafe), np.array(refusal), np.array(category), weight * len(sets) / weight.sum()
    return ids_out, (list(prompts), np.array(prompt_of)), labels, counts


def _pooled_prompts(table: np.ndarray, featurizer: Featurizer, texts: list[str]) -> np.ndarray:
    """Pooled requests; an empty request is all zeros, which the network reads as "none"."""
    out = pooled(table, featurizer.batch(texts))
    out[[i for i, t in enumerate(texts) if not t]] = 0.0
    return out


def _held_out_prompts(samples: list[Sample], root: Path, seed: int, held_out=None) -> list[str]:
    """Every request of a held-out group, JailbreakBench goals included (default: validation and dev)."""
    import csv

    held_out = held_out or (lambda group: split_of(group, seed) != "fit")
    held = [s.prompt for s in samples if held_out(s.group)]
    with open(root / "jailbreakbench" / "jbb_harmful_behaviors.csv", newline="") as fh:
        held += [row["Goal"] for row in csv.DictReader(fh) if held_out(f"jbb:{row['']}")]
    return held


def _scored(traces, model: StaticClassifier, policy: Policy) -> list[ScoredTrace]:
    """Each trace's windows as the gateway's default detector (classifier + lexicon) reads them,
    so the thresholds are tuned on the scores they will be compared with."""
    detector = Ensemble(LearnedDetector(model=model), LexiconDetector())
    loop = asyncio.new_event_loop()
    scored = []
    for trace in progress(traces, "scoring tuning traces"):
        ws = windows_of(trace, policy)
        dets = loop.run_until_complete(detector.detect([Window(st, text, prompt=trace.prompt) for st, text, _, _ in ws]))
        onset = None
        if trace.unsafe and trace.onset is not None:
            ends = np.cumsum([len(p) for p in pieces(trace.text)])
            onset = int(np.searchsorted(ends, trace.onset, side="right"))
        scored.append(
            ScoredTrace(
                trace,
                tuple(ScoredWindow(st, d.unsafe, d.refusal, d.category, end, last)
                      for (st, _, end, last), d in zip(ws, dets)),
                onset,
            )
        )
    loop.close()
    return scored


def validation_sets(traces, model: StaticClassifier, policy: Policy) -> list[ScoredTrace]:
    """The shipped model's own scores on the validation traces, as sets ``<set>@val`` of their own:
    the floor must hold for the model that ships, not only for the fold models."""
    return [_renamed(st, "@val") for st in _scored(traces, model, policy)]


def _renamed(st: ScoredTrace, suffix: str) -> ScoredTrace:
    """The same scores under the set ``<set><suffix>``, which the tuner then judges on its own."""
    set_name, _, rest = st.trace.id.partition("/")
    return dataclasses.replace(st, trace=dataclasses.replace(st.trace, id=f"{set_name}{suffix}/{rest}"))


def fit_weights(
    fit_samples: list[Sample],
    held_out: list[str],  # requests of every held-out trace: their near-repeats leave the training data
    root: Path,
    policy: Policy,
    featurizer: Featurizer,
    table: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    generated: Sequence[str | Path] = (),
    keep_generated: Callable[[Sample], bool] | None = None,
) -> tuple[tuple[Weights, ...], int]:
    """Cut the windows, fit the network, fold it into token tables; (weights, windows trained on).

    With ``cfg.members`` > 1, as many networks, each from its own seed (``seed + i``, which also
    draws its windows' settings, stand-in requests and decoys), for a logit-mean ensemble.

    ``keep_generated`` drops generated samples from training (cross-validation scores them instead).
    """
    members = [_fit_member(fit_samples, held_out, root, policy, featurizer, table, cfg, seed + i, generated,
                           keep_generated) for i in range(cfg.members)]
    return tuple(w for w, _ in members), members[0][1]


def _fit_member(fit_samples: list[Sample], held_out: list[str], root: Path, policy: Policy, featurizer: Featurizer,
                table: np.ndarray, cfg: TrainConfig, seed: int, generated: Sequence[str | Path],
                keep_generated: Callable[[Sample], bool] | None) -> tuple[Weights, int]:
    extra = [s for path in generated for s in generated_samples(root, path, held_out)
             if keep_generated is None or keep_generated(s)]
    ids, (prompt_texts, prompt_of), labels, counts = training_set(fit_samples, root, policy, featurizer, seed, extra)
    _log(f"{len(ids)} training windows: {dict(counts)}; {len(prompt_texts)} distinct requests")
    reqs = requests(root, held_out, seed=seed)
    _log(f"{len(reqs)} labelled requests ({sum(r.harmful for r in reqs)} harmful), held-out near-repeats removed")
    xp = _pooled_prompts(table, featurizer, prompt_texts)[prompt_of]
    req_x = _pooled_prompts(table, featurizer, [r.text for r in reqs])
    params = fit(pooled(table, ids), xp, *labels, (req_x, np.array([r.harmful for r in reqs])), cfg, seed=seed,
                 tokens=padded(ids, featurizer.max_tokens) if cfg.peak_width else None, table=table)
    prompt_weights = PromptWeights(fold(table, params, "wp"), params["bp"], params["mix"], params["wq"], params["bq"])
    peak = PeakWeights(fold(table, params, "wk") + params["bk"], params["kmix"]) if "wk" in params else None
    ngram = None
    if cfg.ngram_blend:
        ngram_w, ngram_b = fit_ngrams(ids, labels[0], labels[3], featurizer.vocab_size, epochs=cfg.ngram_epochs,
                                      lr=cfg.ngram_lr, l2=cfg.ngram_l2, seed=seed, threads=cfg.threads)
        ngram = NgramWeights(ngram_w, ngram_b, featurizer.vocab_size, cfg.ngram_blend)
    weights = Weights(fold(table, params), params["b1"], params["w2"], params["b2"], S_CODES, featurizer.max_tokens,
                      prompt_weights, peak, ngram)
    return weights, len(ids)


def train(
    data_dir: str | Path | None,
    out_dir: str | Path,
    seed: int = 0,
    *,
    config: TrainConfig | None = None,
    cache_dir: str | Path = ".cache/thoughtguard",
    policy_path: str | Path | None = None,
    generated: Sequence[str | Path] = (),
    tune_on: str = "crossval",
    folds: int = 4,
) -> dict[str, object]:
    """Train, tune the thresholds, report on validation and dev, write the artifact; returns the figures.

    ``generated``: JSONL files of answers written by a local model (``guard.datasets.generated``),
    trained on; never validated or reported on. ``tune_on``: ``crossval`` picks the thresholds on
    the pooled out-of-fold scores of ``folds`` classifiers fitted like this one over the train
    side (about 11,000 traces with the generated benign answers, each fold's share of which is
    held out of that fold's fit; ``folds`` times the training time) together with this very
    classifier's scores on the validation slice, each set a constraint of its own; ``validation`` on the
    validation slice alone (about 2,000 traces, where one benign instruction is 5 points of FPR).
    Dev is never used for either.
    """
    from tokenizers import Tokenizer

    cfg = config or TrainConfig()
    started = time.perf_counter()
    out, cache, root = Path(out_dir), Path(cache_dir), resolve_data_dir(data_dir)
    policy = Policy.load(policy_path or STATIC_POLICY_PATH)
    samples = load_samples(root)
    fit_samples = [s for s in samples if split_of(s.group, seed) == "fit"]
    _log(f"{len(samples)} samples, {len(fit_samples)} in the fit split")

    featurizer = Featurizer(Tokenizer.from_file(str(tokenizer_path())))
    table = token_table(cache, root, cfg.embeddings, cfg.sif)
    weights, n_windows = fit_weights(fit_samples, _held_out_prompts(samples, root, seed), root, policy, featurizer,
                                     table, cfg, seed, generated)
    model = StaticClassifier(weights, featurizer)

    # thresholds from the train side: pooled out-of-fold scores, or the validation slice
    val = list(mixture(samples, "val", seed=seed, cap=DEV_CAPS))
    if tune_on == "crossval":
        from guard.training.crossval import fold_scores

        # the generated benign answers are scored out of fold too: a benign set 20 times the size of
        # the real one, on topics next to harm, which the FPR floor then covers
        tuning = [st for scored in fold_scores(samples, root, policy, featurizer, table, cfg, seed, generated, folds,
                                               scored=generated)
                  for st in scored]
        # and the artifact itself on the validation slice, as sets of their own: the floor must hold
        # for the model that ships, not only for the fold models (their scores sit a little lower)
        tuning += validation_sets(val, model, policy)
    else:
        tuning = _scored(val, model, policy)
    thresholds, tuned_sets = tune(floored(tuning), policy)
    tuned = policy.model_copy(update={"thresholds": thresholds})
    _log(f"thresholds tuned on {tune_on} ({len(tuning)} traces): {thresholds.model_dump()}")

    # write, then reload exactly what ships (int8) for the figures
    meta = {"seed": seed, "config": cfg.__dict__, "decoy_rate": DECOY_RATE, "tuned_on": tune_on,
            "thresholds": thresholds.model_dump()}
    save_weights(weights, out, meta)
    shutil.copyfile(tokenizer_path(), out / TOKENIZER_FILE)
    shipped = LearnedDetector(out)
    dev = list(mixture(samples, "dev", seed=seed, cap=DEV_CAPS))
    val_eval, _ = asyncio.run(evaluate_async(val, shipped, tuned))
    dev_eval, _ = asyncio.run(evaluate_async(dev, shipped, tuned))
    report = {
        "thresholds": thresholds.model_dump(),
        "tuned_on": tune_on,
        "tuning_simulated": tuned_sets,
        "validation": val_eval,
        "dev": dev_eval,
        "artifact_bytes": sum((out / f).stat().st_size for f in ("classifier.npz", TOKENIZER_FILE)),
        "train_seconds": round(time.perf_counter() - started, 1),
        "windows": n_windows,
    }
    figures = {k: report[k] for k in ("thresholds", "tuned_on", "tuning_simulated", "dev", "validation",
                                      "artifact_bytes", "windows")}
    (out / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    return report

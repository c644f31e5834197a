"""``thoughtguard train --tier contextual``: fit the contextual tier's head and tune the cascade.

1. Cut the fit split's traces (and the generated answers) into the windows the monitor checks,
   as the fast tier's training does, with the same stand-in requests; keep at most
   :data:`SAFE_WINDOWS` windows of each safe trace and :data:`MAX_WINDOWS` in all, so the
   encoder's pass stays near 5 minutes on two cores.
2. Read every window and request with all-MiniLM-L6-v2 (``guard.detectors.sentence``), fit the
   head (one ReLU layer, weighted binary cross-entropy, each set weighted as the fast tier's).
3. Tune ``unsafe`` / ``high`` / ``collapse`` for the cascade (fast tier, escalating at
   :data:`ESCALATE_FROM`, geometric merge) on the validation slice; no out-of-fold contextual
   scores exist, so validation is no longer held out for the thresholds. Report validation and
   dev through the real evaluator; dev is never used to choose anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from guard.datasets import DEV_CAPS, load_samples
from guard.datasets.generated import GENERATED, generated_samples, generated_set
from guard.datasets.mixture import mixture, place
from guard.datasets.paths import data_dir as resolve_data_dir
from guard.datasets.progress import progress
from guard.datasets.split import split_of
from guard.detectors.contextual import (ARTIFACT, ESCALATE_FROM, ContextualDetector, HeadWeights, contextual_stack,
                                        features, save_head)
from guard.detectors.sentence import SentenceEncoder
from guard.evaluate import evaluate_async
from guard.events import Stage
from guard.policy import Policy
from guard.training.pipeline import PROMPT_DROPOUT, SET_WEIGHTS, STAND_IN_PROMPTS, _held_out_prompts, scored_by
from guard.training.tune import floored, tune
from guard.training.windows import windows

SAFE_WINDOWS = 10  # per safe trace: their windows are many and alike
MAX_WINDOWS = 45_000
HIDDEN, EPOCHS, LR = 256, 10, 1e-3
MAX_TOKENS = 128  # the encoder's training length; a window of 16 new tokens and 200 characters is ~60


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def training_rows(samples, seed: int) -> list[tuple[str, str, bool, str]]:
    """(window text, request, unsafe, set) for the training windows, seeded."""
    rng = random.Random(seed)
    policy = Policy.load()
    rows = []
    for sample in progress(samples, "cutting contextual windows"):
        for trace in place(sample, seed):
            set_name = generated_set(sample) if sample.source == GENERATED else trace.set_name
            prompt = trace.prompt
            if rng.random() < PROMPT_DROPOUT:
                prompt = STAND_IN_PROMPTS[rng.randrange(len(STAND_IN_PROMPTS))]
            texts = {Stage.REASONING: trace.reasoning, Stage.ANSWER: trace.answer}
            ws = list(windows(trace, policy.window, refusal=sample.refusal))
            if not trace.unsafe and len(ws) > SAFE_WINDOWS:
                ws = rng.sample(ws, SAFE_WINDOWS)
            rows += [(texts[w.stage][w.context_start:w.end], prompt, w.unsafe, set_name) for w in ws]
    return rng.sample(rows, MAX_WINDOWS) if len(rows) > MAX_WINDOWS else rows


def fit_head(x: np.ndarray, y: np.ndarray, weight: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    import torch

    torch.manual_seed(seed)
    xt, yt, wt = torch.tensor(x), torch.tensor(y, dtype=torch.float32), torch.tensor(weight, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(HIDDEN, 1))
    opt = torch.optim.AdamW(net.parameters(), LR, weight_decay=1e-2)
    for _ in progress(range(EPOCHS), "fitting the contextual head"):
        perm = torch.randperm(len(xt))
        for k in range(0, len(xt), 256):
            i = perm[k:k + 256]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[i]).squeeze(1), yt[i], reduction="none")
            opt.zero_grad()
            (loss * wt[i]).mean().backward()
            opt.step()
    first, last = net[0], net[3]
    return (first.weight.detach().numpy().T.copy(), first.bias.detach().numpy().copy(),
            last.weight.detach().numpy()[0].copy(), float(last.bias.detach()[0]))


def train_contextual(data_dir: str | Path | None, out_dir: str | Path = ARTIFACT.parent, seed: int = 0, *,
                     generated: Sequence[str | Path] = (), fast_artifact: str | Path | None = None) -> dict[str, object]:
    started = time.perf_counter()
    root, out = resolve_data_dir(data_dir), Path(out_dir) / ARTIFACT.name
    policy = Policy.load()
    samples = load_samples(root)
    held = _held_out_prompts(samples, root, seed)
    fit_samples = [s for s in samples if split_of(s.group, seed) == "fit"]
    extra = [s for path in generated for s in generated_samples(root, path, held)]
    rows = training_rows([*fit_samples, *extra], seed)
    counts = Counter(r[3] for r in rows)
    _log(f"{len(rows)} contextual training windows: {dict(counts)}")

    encoder = SentenceEncoder(max_tokens=MAX_TOKENS, threads=os.cpu_count())  # every core while training
    prompts = sorted({r[1] for r in rows})
    index = {p: i for i, p in enumerate(prompts)}
    _log(f"reading {len(rows)} windows and {len(prompts)} requests with MiniLM (about 5 minutes on two cores)")
    window_vecs = encoder([r[0] for r in rows])
    prompt_vecs = encoder(prompts)[[index[r[1]] for r in rows]]
    weight = np.array([SET_WEIGHTS[r[3]] / counts[r[3]] for r in rows])
    w1, b1, w2, b2 = fit_head(features(window_vecs, prompt_vecs), np.array([r[2] for r in rows]),
                              weight * len(rows) / weight.sum(), seed)
    meta = {"seed": seed, "windows": len(rows), "escalate_from": ESCALATE_FROM, "tuned_on": "validation"}
    head = HeadWeights(w1, b1, w2, b2, MAX_TOKENS, {}, meta)

    save_head(head, out)  # reloaded as it ships (float16) for the tuning and the figures
    stack = contextual_stack(fast_artifact, ContextualDetector(out, encoder=encoder))
    val = list(mixture(samples, "val", seed=seed, cap=DEV_CAPS))
    thresholds, tuned_sets = tune(floored(scored_by(val, stack, policy)), policy)
    chosen = {k: getattr(thresholds, k) for k in ("unsafe", "high", "collapse")}
    save_head(HeadWeights(w1, b1, w2, b2, MAX_TOKENS, chosen, meta), out)
    _log(f"cascade thresholds tuned on validation: {chosen}")

    tuned = policy.model_copy(update={"thresholds": thresholds})
    import torch

    torch.set_num_threads(1)  # the figures' check times are for one core, as the fast tier's
    dev = list(mixture(samples, "dev", seed=seed, cap=DEV_CAPS))
    val_eval, _ = asyncio.run(evaluate_async(val, stack, tuned))
    dev_eval, _ = asyncio.run(evaluate_async(dev, stack, tuned))
    report = {"thresholds": chosen, "tuned_on": "validation", "tuning_simulated": tuned_sets,
              "validation": val_eval, "dev": dev_eval, "artifact_bytes": out.stat().st_size,
              "windows": len(rows), "train_seconds": round(time.perf_counter() - started, 1)}
    (out.parent / "contextual_figures.json").write_text(json.dumps(
        {k: v for k, v in report.items() if k != "train_seconds"}, indent=1) + "\n")
    return report

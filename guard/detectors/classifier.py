"""The default detector: a small learned classifier that runs in numpy in well under a millisecond.

Every vocabulary token has a static vector distilled from all-MiniLM-L6-v2 (see
``guard.training.distil``). A window is the mean of its tokens' vectors, read by a
one-hidden-layer head with three outputs: the probability that the window carries harmful
content, the probability that it recognises harm and declines (the self-flag signal), and the
MLCommons hazard category. The request that started the stream is read the same way through
its own small layer and mixed into the hidden layer, so the head judges the text *as an answer
to that request*; the request's reading is computed once per request and cached. A max-pooled
pathway adds each column's maximum over the window's projected tokens, so one telling word is
not averaged away in a long window. A linear reading of the window's hashed token n-grams
(``guard.detectors.ngrams``) can be blended into the unsafe logit, for the wording the means
blur. Both are optional and off in the shipped artifact. The first layers are linear, so they
are folded into token tables offline (mean(E[ids]) @ W1 == mean((E @ W1)[ids]), and the
projection before the maximum likewise): serving gathers narrow rows and never touches the 384-d vectors.
Weights ship in ``guard/artifacts/`` as int8 with per-row scales; ``guard.training`` rebuilds
them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from guard.detectors.base import Detector, Window
from guard.detectors.featurize import Featurizer
from guard.detectors.ngrams import NgramWeights, blended
from guard.events import Stage
from guard.verdict import Detection

ARTIFACT_DIR = Path(__file__).resolve().parent.parent / "artifacts"
WEIGHTS_FILE = "classifier.npz"
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class Weights:
    table: np.ndarray  # (vocab, hidden) float32: token vectors with the first layer folded in
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (hidden, 2 + categories): unsafe, refusal, category logits
    b2: np.ndarray
    categories: tuple[str, ...]
    max_tokens: int = 128
    prompt: "PromptWeights | None" = None
    peak: "PeakWeights | None" = None
    ngram: NgramWeights | None = None


@dataclass(frozen=True)
class PromptWeights:
    """The request pathway: its own folded table, the layer that mixes it into ``hidden``, its harm head."""

    table: np.ndarray  # (vocab, prompt_hidden)
    bias: np.ndarray  # (prompt_hidden,)
    mix: np.ndarray  # (prompt_hidden, hidden)
    harm: np.ndarray  # (prompt_hidden, 1): "is this request harmful", a logit
    harm_bias: np.ndarray


@dataclass(frozen=True)
class PeakWeights:
    """The max-pooled pathway: one salient word must count however long the window around it is."""

    table: np.ndarray  # (vocab, peak_width): token vectors through their own projection, bias included
    mix: np.ndarray  # (peak_width, hidden): the window's per-column maximum into the hidden layer


def _quantise(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.abs(table).max(axis=1) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(table / safe[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def _member_arrays(weights: Weights, info: dict[str, object], prefix: str) -> dict[str, np.ndarray]:
    q, scale = _quantise(weights.table)
    arrays: dict[str, np.ndarray] = {"table_q": q, "table_s": scale, "b1": weights.b1, "w2": weights.w2, "b2": weights.b2}
    if weights.prompt is not None:
        pw = weights.prompt
        pq, ps = _quantise(pw.table)
        arrays |= {"prompt_table_q": pq, "prompt_table_s": ps, "prompt_b": pw.bias, "prompt_mix": pw.mix,
                   "prompt_harm": pw.harm, "prompt_harm_b": pw.harm_bias}
    if weights.peak is not None:
        kq, ks = _quantise(weights.peak.table)
        arrays |= {"peak_table_q": kq, "peak_table_s": ks, "peak_mix": weights.peak.mix}
    if weights.ngram is not None:
        ng = weights.ngram
        info[prefix + "ngram"] = {"bias": ng.bias, "vocab": ng.vocab, "blend": ng.blend}
        arrays["ngram_w"] = ng.weights.astype(np.float16)
    return {prefix + k: v if v.dtype in (np.int8, np.float16) else v.astype(np.float32) for k, v in arrays.items()}


def save_weights(weights: Weights | Sequence[Weights], directory: Path, meta: dict[str, object]) -> Path:
    """One network, or several (an ensemble: member ``i > 0`` under the key prefix ``m{i}_``)."""
    members = (weights,) if isinstance(weights, Weights) else tuple(weights)
    directory.mkdir(parents=True, exist_ok=True)
    info = {**meta, "categories": list(members[0].categories), "max_tokens": members[0].max_tokens,
            "members": len(members)}
    arrays: dict[str, np.ndarray] = {}
    for i, member in enumerate(members):
        arrays |= _member_arrays(member, info, f"m{i}_" if i else "")
    path = directory / WEIGHTS_FILE
    np.savez_compressed(path, meta=np.frombuffer(json.dumps(info).encode(), dtype=np.uint8), **arrays)
    return path


def _member(z, meta: dict[str, object], prefix: str) -> Weights:
    def has(key: str) -> bool:
        return prefix + key in z

    def get(key: str) -> np.ndarray:
        return z[prefix + key]

    def dequantised(key: str) -> np.ndarray:
        return get(key + "_q").astype(np.float32) * get(key + "_s")[:, None]

    prompt = None
    if has("prompt_table_q"):
        prompt = PromptWeights(dequantised("prompt_table"), get("prompt_b"), get("prompt_mix"), get("prompt_harm"),
                               get("prompt_harm_b"))
    peak = PeakWeights(dequantised("peak_table"), get("peak_mix")) if has("peak_table_q") else None
    ngram = None
    if has("ngram_w"):
        ng = meta[prefix + "ngram"]
        ngram = NgramWeights(get("ngram_w").astype(np.float32), float(ng["bias"]), int(ng["vocab"]), float(ng["blend"]))
    return Weights(dequantised("table"), get("b1"), get("w2"), get("b2"), tuple(meta["categories"]),
                   int(meta["max_tokens"]), prompt, peak, ngram)


def load_weights(directory: Path) -> tuple[tuple[Weights, ...], dict[str, object]]:
    """Every member network of the artifact (one, unless it was trained with ``members`` > 1), and its metadata."""
    with np.load(directory / WEIGHTS_FILE) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        members = tuple(_member(z, meta, f"m{i}_" if i else "") for i in range(int(meta.get("members", 1))))
    return members, meta


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _read_request(pw: PromptWeights, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.maximum(pw.table[ids].mean(axis=0) + pw.bias, 0.0)
    return hidden, hidden @ pw.mix


class StaticClassifier:
    """The numpy forward pass; the same maths as ``guard.training.model`` in torch.

    Given several member networks (fitted alike from different seeds), it averages their output
    logits: on the train side's nested cross-validation two members read recall 3-5 points
    higher than either alone at the same false-positive rates (``guard/artifacts/README.md``).
    """

    # a window under a request that reads harmless is also read without it, and the higher unsafe
    # reading kept: a harmless request typed over a harmful image must not clear harmful text
    # (guard/artifacts/README.md, Known weaknesses); None reads every window under its request only
    REQUEST_BLIND_BELOW: float | None = 0.4
    PROMPT_CACHE = 1024  # requests whose hidden reading is kept (one per stream in flight, and then some)
    # the cache keys are the requests themselves: bound their text too, or a run of huge
    # prompts would stay in memory long after their streams ended
    PROMPT_CACHE_CHARS = 4_000_000

    def __init__(self, weights: Weights | Sequence[Weights], featurizer: Featurizer,
                 meta: dict[str, object] | None = None, *, blind_below: float | None = REQUEST_BLIND_BELOW) -> None:
        self.blind_below = blind_below
        self.members = (weights,) if isinstance(weights, Weights) else tuple(weights)
        if not self.members:
            raise ValueError("a classifier needs at least one member network")
        self.weights, self.featurizer, self.meta = self.members[0], featurizer, meta or {}
        # request -> per member: (its hidden reading, that reading already through the mixing layer)
        self._prompts: dict[str, list[tuple[np.ndarray, np.ndarray] | None]] = {}
        self._prompt_chars = 0

    @classmethod
    def load(cls, directory: str | Path | None = None, *,
             blind_below: float | None = REQUEST_BLIND_BELOW) -> "StaticClassifier":
        directory = Path(directory or ARTIFACT_DIR)
        members, meta = load_weights(directory)
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        return cls(members, Featurizer(tokenizer, max_tokens=members[0].max_tokens), meta, blind_below=blind_below)

    def _request(self, prompt: str) -> list[tuple[np.ndarray, np.ndarray] | None] | None:
        if not prompt or all(w.prompt is None for w in self.members):
            return None
        cached = self._prompts.get(prompt)
        if cached is None:
            ids = self.featurizer(prompt)
            cached = [None if w.prompt is None else _read_request(w.prompt, ids) for w in self.members]
            # oldest first (dicts keep insertion order); a prompt over the text budget still gets
            # in alone, since its own request holds that text anyway
            while self._prompts and (
                len(self._prompts) >= self.PROMPT_CACHE or self._prompt_chars + len(prompt) > self.PROMPT_CACHE_CHARS
            ):
                self._prompt_chars -= len(next(iter(self._prompts)))
                self._prompts.pop(next(iter(self._prompts)))
            self._prompts[prompt] = cached
            self._prompt_chars += len(prompt)
        return cached

    def prompt_harm(self, prompt: str) -> float | None:
        """Probability that the request itself asks for harm (the auxiliary head); None without one."""
        request = self._request(prompt)
        if request is None:
            return None
        logits = [r[0] @ w.prompt.harm + w.prompt.harm_bias
                  for w, r in zip(self.members, request) if r is not None and w.prompt is not None]
        return float(_sigmoid(np.mean(logits, axis=0))[0])

    def logits(self, token_ids: Sequence[np.ndarray], prompts: Sequence[str] | None = None) -> np.ndarray:
        requests = [self._request(p) for p in prompts or ()]
        blind = [] if self.blind_below is None else [
            row for row, (p, r) in enumerate(zip(prompts or (), requests))
            if r is not None and (self.prompt_harm(p) or 0.0) < self.blind_below
        ]
        members = [self._member_logits(i, w, token_ids, requests, blind) for i, w in enumerate(self.members)]
        out = members[0][0] if len(members) == 1 else np.mean([m for m, _ in members], axis=0)
        if blind:
            alone = members[0][1] if len(members) == 1 else np.mean([b for _, b in members], axis=0)
            for j, row in enumerate(blind):
                if alone[j, 0] > out[row, 0]:  # the request lowered the reading: keep the text's own
                    refusal = max(out[row, 1], alone[j, 1])
                    out[row] = alone[j]
                    out[row, 1] = refusal
        return out

    @staticmethod
    def _member_logits(i: int, w: Weights, token_ids: Sequence[np.ndarray],
                       requests: Sequence[list[tuple[np.ndarray, np.ndarray] | None] | None],
                       blind: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Logits under each window's request, and for the ``blind`` rows, without it."""
        pre = np.stack([w.table[ids].mean(axis=0) for ids in token_ids]) + w.b1
        if w.peak is not None:
            pre += np.stack([w.peak.table[ids].max(axis=0) for ids in token_ids]) @ w.peak.mix
        alone = np.maximum(pre[list(blind)], 0.0) @ w.w2 + w.b2  # the text's part is shared, so this is cheap
        for row, request in enumerate(requests):
            if request is not None and request[i] is not None:
                pre[row] += request[i][1]  # type: ignore[index]
        out = np.maximum(pre, 0.0) @ w.w2 + w.b2
        if w.ngram is not None and w.ngram.blend:
            out[:, 0] = blended(out[:, 0], w.ngram, token_ids)
            if len(blind):
                alone[:, 0] = blended(alone[:, 0], w.ngram, [token_ids[r] for r in blind])
        return out, alone

    def predict(self, texts: Sequence[str], name: str = "learned", prompts: Sequence[str] | None = None) -> list[Detection]:
        ids = [self.featurizer(texts[0])] if len(texts) == 1 else self.featurizer.batch(list(texts))
        return self.detections(self.logits(ids, prompts), name)

    def detections(self, logits: np.ndarray, name: str = "learned") -> list[Detection]:
        unsafe = _sigmoid(logits[:, 0])
        refusal = _sigmoid(logits[:, 1])
        cats = np.argmax(logits[:, 2:], axis=1)
        return [
            Detection(unsafe=float(u), category=self.weights.categories[c], refusal=float(r), detector=name)
            for u, r, c in zip(unsafe, refusal, cats)
        ]


class LearnedDetector(Detector):
    """Scores ``window.full`` (carried context plus new text); never awaits, so it adds no I/O.

    The gateway pairs it with the lexicon in :class:`~guard.detectors.ensemble.Ensemble`: the
    classifier has seen only 100 harmful behaviours and misses some blatant recipes that one
    regular expression catches.
    """

    name = "learned"

    def __init__(self, artifact_dir: str | Path | None = None, *, model: StaticClassifier | None = None,
                 blind_below: float | None = StaticClassifier.REQUEST_BLIND_BELOW) -> None:
        self.model = model or StaticClassifier.load(artifact_dir, blind_below=blind_below)

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        if not windows:
            return []
        out = self.model.predict([w.full for w in windows], self.name, [w.prompt for w in windows])
        for i, w in enumerate(windows):
            # a request is judged by the head trained on labelled requests, not as an answer to itself
            harm = self.model.prompt_harm(w.full) if w.stage is Stage.PROMPT else None
            if harm is not None:
                out[i] = Detection(unsafe=harm, category=out[i].category, refusal=0.0, detector=self.name)
        return out

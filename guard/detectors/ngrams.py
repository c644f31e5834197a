"""The classifier's second reading of a window: its exact wording, as hashed token n-grams.

The static-vector network reads a window as the mean of its token vectors, so it judges the
topic and tone well but blurs wording: "mix X with Y, then heat" and "X and Y react when
heated" pool to nearly the same point. A linear model over the window's token ids and id
bigrams (hashed into a fixed table) keeps the word order, at the cost of paraphrase. Its logit
is blended into the network's unsafe logit (``blend`` of it), in the hope that each reading
is weak where the other is strong. Off in the shipped artifact: on a held-out fold the blend
lowered recall at the same flag rate (docs/experiments.md, "A hashed n-gram reading").
Features are binary and L2-normalised, so a long window is not surer than a short one for
being long. Only numpy: serving never hashes strings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BUCKETS = 1 << 18
_MULTIPLIER = 1_000_003  # a prime: consecutive ids spread over the bigram buckets


@dataclass(frozen=True)
class NgramWeights:
    weights: np.ndarray  # (buckets,) float32: the first ``vocab`` are unigrams, the rest hashed bigrams
    bias: float
    vocab: int
    blend: float  # the n-gram logit's share of the unsafe logit, in [0, 1]


def features(ids: np.ndarray, vocab: int, buckets: int = BUCKETS) -> np.ndarray:
    """The distinct feature indices of one window's token ids: each id, then each hashed id bigram."""
    ids = np.asarray(ids, dtype=np.int64)
    bigrams = vocab + (ids[:-1] * _MULTIPLIER + ids[1:]) % (buckets - vocab)
    return np.unique(np.concatenate([ids, bigrams]))


def ngram_logit(ngram: NgramWeights, ids: np.ndarray) -> float:
    found = features(ids, ngram.vocab, len(ngram.weights))
    return ngram.bias + float(ngram.weights[found].sum()) / np.sqrt(len(found))


def blended(unsafe_logits: np.ndarray, ngram: NgramWeights, token_ids) -> np.ndarray:
    """The network's unsafe logits with the n-gram logits mixed in (logit space)."""
    extra = np.array([ngram_logit(ngram, ids) for ids in token_ids], dtype=unsafe_logits.dtype)
    return (1.0 - ngram.blend) * unsafe_logits + ngram.blend * extra

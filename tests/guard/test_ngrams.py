"""The hashed n-gram reading: its features, its training, and its blend into the classifier's logit.

The toy task is one a mean of token vectors cannot solve: every window holds tokens A and B;
it is positive when A comes right before B, negative when B comes right before A.
"""

from __future__ import annotations

import numpy as np
import pytest

from guard.datasets.categories import S_CODES
from guard.detectors.classifier import StaticClassifier, Weights, load_weights, save_weights
from guard.detectors.ngrams import BUCKETS, NgramWeights, blended, features, ngram_logit

A, B, VOCAB, DIM, HIDDEN = 5, 9, 50, 8, 6


def test_features_are_the_distinct_ids_then_order_sensitive_bigrams():
    found = features(np.array([3, 4, 3, 4]), VOCAB)
    assert found.tolist() == sorted(set(found.tolist()))  # distinct, so features are binary
    assert {3, 4} <= set(found.tolist())
    bigrams = [f for f in found.tolist() if f >= VOCAB]
    assert len(bigrams) == 2 and all(f < BUCKETS for f in bigrams)  # (3,4) and (4,3), each once
    assert set(features(np.array([A, B]), VOCAB)) != set(features(np.array([B, A]), VOCAB))
    assert features(np.array([7]), VOCAB).tolist() == [7]  # one token, no bigram


def test_logit_is_the_l2_normalised_linear_model():
    rng = np.random.default_rng(0)
    ngram = NgramWeights(rng.normal(size=BUCKETS).astype(np.float32), 0.25, VOCAB, 0.5)
    ids = rng.integers(1, VOCAB, size=40)
    x = np.zeros(BUCKETS)
    x[features(ids, VOCAB)] = 1.0
    x /= np.linalg.norm(x)
    assert ngram_logit(ngram, ids) == pytest.approx(0.25 + x @ ngram.weights, rel=1e-5)


def _toy(n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    ids, labels = [], rng.random(n) < 0.5
    for positive in labels:
        window = rng.choice([t for t in range(1, VOCAB) if t not in (A, B)], size=int(rng.integers(4, 60)))
        at = int(rng.integers(len(window) - 1))
        window[at : at + 2] = (A, B) if positive else (B, A)
        ids.append(window.astype(np.int32))
    return ids, labels


def test_training_learns_word_order_that_a_mean_cannot_see():
    pytest.importorskip("torch")
    from guard.training.ngrams import fit_ngrams

    rng = np.random.default_rng(1)
    ids, labels = _toy(2000, rng)
    weights, bias = fit_ngrams(ids, labels, np.ones(len(ids)), VOCAB, epochs=6, batch=128, threads=1)
    ngram = NgramWeights(weights, bias, VOCAB, 1.0)
    test_ids, test_labels = _toy(300, np.random.default_rng(2))
    accuracy = np.mean([(ngram_logit(ngram, i) > 0) == y for i, y in zip(test_ids, test_labels)])
    assert accuracy > 0.95, accuracy
    # a window and its copy with the pair swapped hold the same tokens (one mean vector), yet
    # the n-gram reading tells them apart
    positive = next(i for i, y in zip(test_ids, test_labels) if y)
    swapped = positive.copy()
    at = int(np.flatnonzero((positive[:-1] == A) & (positive[1:] == B))[0])
    swapped[at : at + 2] = (B, A)
    assert (np.bincount(positive, minlength=VOCAB) == np.bincount(swapped, minlength=VOCAB)).all()
    assert ngram_logit(ngram, positive) > 0 > ngram_logit(ngram, swapped)


def _weights(ngram: NgramWeights | None) -> Weights:
    rng = np.random.default_rng(3)
    return Weights(rng.normal(size=(VOCAB, HIDDEN)).astype(np.float32), rng.normal(size=HIDDEN).astype(np.float32),
                   rng.normal(size=(HIDDEN, 2 + len(S_CODES))).astype(np.float32),
                   rng.normal(size=2 + len(S_CODES)).astype(np.float32), S_CODES, 128, ngram=ngram)


def test_blend_moves_only_the_unsafe_logit():
    rng = np.random.default_rng(4)
    ngram = NgramWeights(rng.normal(size=BUCKETS).astype(np.float32), -0.5, VOCAB, 0.3)
    ids = [rng.integers(1, VOCAB, size=int(n)).astype(np.int32) for n in (1, 7, 30)]
    plain = StaticClassifier(_weights(None), featurizer=None).logits(ids)  # type: ignore[arg-type]
    mixed = StaticClassifier(_weights(ngram), featurizer=None).logits(ids)  # type: ignore[arg-type]
    expected = [0.7 * plain[i, 0] + 0.3 * ngram_logit(ngram, t) for i, t in enumerate(ids)]
    np.testing.assert_allclose(mixed[:, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(mixed[:, 1:], plain[:, 1:])
    np.testing.assert_allclose(blended(plain[:, 0], ngram, ids), expected, rtol=1e-5)
    off = NgramWeights(ngram.weights, ngram.bias, VOCAB, 0.0)
    np.testing.assert_array_equal(StaticClassifier(_weights(off), featurizer=None).logits(ids), plain)  # type: ignore[arg-type]


def test_ngram_weights_survive_saving(tmp_path):
    rng = np.random.default_rng(5)
    ngram = NgramWeights(rng.normal(size=BUCKETS).astype(np.float32), 0.125, VOCAB, 0.3)
    save_weights(_weights(ngram), tmp_path, {})
    (loaded,), _ = load_weights(tmp_path)
    assert loaded.ngram is not None
    assert (loaded.ngram.bias, loaded.ngram.vocab, loaded.ngram.blend) == (0.125, VOCAB, 0.3)
    np.testing.assert_allclose(loaded.ngram.weights, ngram.weights, rtol=1e-3, atol=1e-3)  # stored as float16
    save_weights(_weights(None), tmp_path, {})
    assert load_weights(tmp_path)[0][0].ngram is None

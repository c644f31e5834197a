"""The neighbour-product reading sees word order, and serving computes what training fitted.

Toy task the mean of token vectors cannot solve: a window holds tokens A and B among filler, A
right before B (positive) or B right before A (negative); both orders pool to the same mean.
"""

from __future__ import annotations

import numpy as np
import pytest

from guard.detectors import bigrams
from guard.detectors.bigrams import BigramWeights

A, B, VOCAB, DIM = 3, 5, 40, 12


def test_the_feature_depends_on_order_and_is_zero_for_one_token():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(VOCAB, DIM)).astype(np.float32)
    forward, backward = bigrams.feature(table[[A, B]]), bigrams.feature(table[[B, A]])
    assert forward.shape == (DIM * DIM,)
    np.testing.assert_allclose(forward, np.outer(table[A], table[B]).ravel(), rtol=1e-6)
    assert not np.allclose(forward, backward)
    assert not bigrams.feature(table[[A]]).any()
    # a mean over pairs: repeating a window does not make it louder
    np.testing.assert_allclose(bigrams.feature(table[[A, B, A, B]]), (2 * forward + backward) / 3, rtol=1e-5)


def test_the_basis_is_the_leading_principal_directions_with_fixed_signs():
    rng = np.random.default_rng(1)
    table = (rng.normal(size=(200, DIM)) * np.linspace(3, 0.1, DIM)).astype(np.float32)
    basis = bigrams.basis(table, 4)
    assert basis.shape == (DIM, 4)
    np.testing.assert_allclose(basis.T @ basis, np.eye(4), atol=1e-5)
    assert (basis.sum(axis=0) > 0).all()
    # the first direction carries the most variance
    spread = ((table - table.mean(0)) @ basis).var(axis=0)
    assert (np.diff(spread) < 0).all()


def _toy(n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    ids, labels = [], rng.random(n) < 0.5
    filler = [t for t in range(1, VOCAB) if t not in (A, B)]
    for positive in labels:
        window = list(rng.choice(filler, size=int(rng.integers(3, 40))))
        at = int(rng.integers(len(window) + 1))
        window[at:at] = [A, B] if positive else [B, A]
        ids.append(np.array(window, dtype=np.int32))
    return ids, labels


@pytest.fixture(scope="module")
def trained():
    pytest.importorskip("torch")
    from guard.datasets.categories import S_CODES
    from guard.detectors.classifier import Weights
    from guard.training.model import TrainConfig, fit, fold, pooled
    from guard.training.pipeline import _bigram_inputs

    rng = np.random.default_rng(0)
    table = rng.normal(size=(VOCAB, DIM)).astype(np.float32)
    ids, labels = _toy(2000, rng)
    n = len(ids)
    projected, scale, x = _bigram_inputs(table, ids, DIM)
    cfg = TrainConfig(hidden=16, epochs=30, batch=128, lr=1e-2, prompt_hidden=4, dropout=0.0, threads=1, bigram_rank=DIM)
    requests = (rng.normal(size=(20, DIM)).astype(np.float32), rng.random(20) < 0.5)
    params = fit(pooled(table, ids), np.zeros((n, DIM), np.float32), labels, np.zeros(n, bool), np.full(n, -1),
                 np.ones(n), requests, cfg, bigram=x)
    weights = Weights(fold(table, params), params["b1"], params["w2"], params["b2"], S_CODES, 128,
                      bigram=BigramWeights(projected, params["bmix"] / scale[:, None]))
    return table, params, weights, projected, scale


def test_serving_forward_is_the_training_network(trained):
    from guard.detectors.classifier import StaticClassifier

    table, p, weights, projected, scale = trained
    ids, _ = _toy(50, np.random.default_rng(1))
    pre = np.stack([table[i].mean(axis=0) @ p["w1"] + p["b1"] + (bigrams.feature(projected[i]) / scale) @ p["bmix"]
                    for i in ids])
    reference = np.maximum(pre, 0.0) @ p["w2"] + p["b2"]
    served = StaticClassifier(weights, featurizer=None).logits(ids)  # type: ignore[arg-type]  # logits() takes ids
    np.testing.assert_allclose(served, reference, rtol=1e-4, atol=1e-4)


def test_the_pathway_tells_the_two_orders_apart(trained):
    from guard.detectors.classifier import StaticClassifier

    _, _, weights, _, _ = trained
    ids, labels = _toy(400, np.random.default_rng(2))
    unsafe = StaticClassifier(weights, featurizer=None).logits(ids)[:, 0]  # type: ignore[arg-type]
    assert ((unsafe > 0) == labels).mean() > 0.9
    # without it the same network is at chance: both orders have one mean
    blind = StaticClassifier(weights.__class__(**{**weights.__dict__, "bigram": None}), featurizer=None)  # type: ignore[arg-type]
    assert ((blind.logits(ids)[:, 0] > 0) == labels).mean() < 0.7


def test_bigram_weights_survive_saving(trained, tmp_path):
    from guard.detectors.classifier import load_weights, save_weights

    _, _, weights, _, _ = trained
    save_weights(weights, tmp_path, {})
    (loaded,), _ = load_weights(tmp_path)
    assert loaded.bigram is not None
    np.testing.assert_allclose(loaded.bigram.table, weights.bigram.table, atol=np.abs(weights.bigram.table).max() / 100)
    np.testing.assert_array_equal(loaded.bigram.mix, weights.bigram.mix)

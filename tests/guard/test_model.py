"""The training maths (torch) and the serving maths (numpy) are the same network.

A toy task only the max-pooled pathway reads well: one marker token somewhere in a window of
5 to 120 filler tokens, which a mean dilutes away in long windows.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from guard.datasets.categories import S_CODES  # noqa: E402
from guard.detectors.classifier import PeakWeights, PromptWeights, StaticClassifier, Weights, load_weights, save_weights  # noqa: E402
from guard.training.model import TrainConfig, fit, fold, padded, pooled  # noqa: E402

MARKER, VOCAB, DIM = 7, 60, 16


def _toy(n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    ids, labels = [], rng.random(n) < 0.5
    for positive in labels:
        window = rng.choice([t for t in range(1, VOCAB) if t != MARKER], size=int(rng.integers(5, 121)))
        if positive:
            window[rng.integers(len(window))] = MARKER
        ids.append(window.astype(np.int32))
    return ids, labels


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(VOCAB, DIM)).astype(np.float32)
    ids, labels = _toy(1500, rng)
    n = len(ids)
    cfg = TrainConfig(hidden=16, epochs=25, batch=128, lr=1e-2, prompt_hidden=4, peak_width=8, dropout=0.0, threads=1)
    requests = (rng.normal(size=(20, DIM)).astype(np.float32), rng.random(20) < 0.5)
    params = fit(pooled(table, ids), np.zeros((n, DIM), np.float32), labels, np.zeros(n, bool), np.full(n, -1),
                 np.ones(n), requests, cfg, tokens=padded(ids, 128), table=table)
    weights = Weights(fold(table, params), params["b1"], params["w2"], params["b2"], S_CODES, 128,
                      PromptWeights(fold(table, params, "wp"), params["bp"], params["mix"], params["wq"], params["bq"]),
                      PeakWeights(fold(table, params, "wk") + params["bk"], params["kmix"]))
    return table, params, weights


def test_padded_marks_the_end_of_every_window():
    out = padded([np.array([3, 4], np.int32), np.arange(200, dtype=np.int32)], 128)
    assert out.shape == (2, 128) and out.dtype == np.int32
    assert out[0, :2].tolist() == [3, 4] and (out[0, 2:] == -1).all()
    assert (out[1] == np.arange(128)).all()


def test_serving_forward_is_the_training_network(trained):
    table, p, weights = trained
    model = StaticClassifier(weights, featurizer=None)  # type: ignore[arg-type]  # logits() takes ids
    ids, _ = _toy(50, np.random.default_rng(1))
    # the network as trained: first layers on the unfolded vectors, max after the projection
    pre = np.stack([table[i].mean(axis=0) @ p["w1"] + p["b1"] + (table[i] @ p["wk"] + p["bk"]).max(axis=0) @ p["kmix"]
                    for i in ids])
    reference = np.maximum(pre, 0.0) @ p["w2"] + p["b2"]
    np.testing.assert_allclose(model.logits(ids), reference, rtol=1e-4, atol=1e-4)


def test_the_peak_pathway_finds_one_marker_in_a_long_window(trained):
    _, _, weights = trained
    model = StaticClassifier(weights, featurizer=None)  # type: ignore[arg-type]
    ids, labels = _toy(400, np.random.default_rng(2))
    unsafe = model.logits(ids)[:, 0]
    long = np.array([len(i) > 80 for i in ids])
    accuracy = ((unsafe > 0) == labels)[long].mean()
    assert accuracy > 0.95, accuracy


def test_peak_weights_survive_saving(trained, tmp_path):
    _, _, weights = trained
    save_weights(weights, tmp_path, {})
    (loaded,), _ = load_weights(tmp_path)
    assert loaded.peak is not None
    np.testing.assert_allclose(loaded.peak.table, weights.peak.table, atol=np.abs(weights.peak.table).max() / 100)
    np.testing.assert_array_equal(loaded.peak.mix, weights.peak.mix)


def test_every_member_survives_saving(trained, tmp_path):
    import dataclasses

    _, _, weights = trained
    other = dataclasses.replace(weights, w2=weights.w2 * 0.5, b2=weights.b2 - 1.0, peak=None)
    save_weights((weights, other), tmp_path, {"seed": 0})
    members, meta = load_weights(tmp_path)
    assert meta["members"] == 2 and len(members) == 2 and meta["seed"] == 0
    np.testing.assert_array_equal(members[0].w2, weights.w2.astype(np.float32))
    np.testing.assert_array_equal(members[1].w2, other.w2.astype(np.float32))
    assert members[0].peak is not None and members[1].peak is None and members[1].prompt is not None
    ids, _ = _toy(20, np.random.default_rng(3))
    served = StaticClassifier(members, featurizer=None).logits(ids)  # type: ignore[arg-type]
    exact = (StaticClassifier(weights, featurizer=None).logits(ids)  # type: ignore[arg-type]
             + StaticClassifier(other, featurizer=None).logits(ids)) / 2  # type: ignore[arg-type]
    np.testing.assert_allclose(served, exact, atol=0.05 * np.abs(exact).max())  # int8 tables

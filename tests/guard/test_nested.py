"""Nested cross-validation: each fold is judged at thresholds tuned on the other folds alone."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import pytest

from guard.policy import Policy
from guard.training.nested import load_folds, logit_mean, nested
from tests.guard.test_tune import _trace


def _fold(odd_benign: int) -> list:
    unsafe = [_trace("unsafe_answer", i, [0.85] * 3) for i in range(10)]
    benign = [_trace("benign", i, [0.5] * 3 if i < odd_benign else [0.1] * 3) for i in range(10)]
    return unsafe + benign


def test_a_fold_is_judged_at_thresholds_it_did_not_choose():
    # fold 0 holds two benign traces that read 0.5; the other folds are clean
    folds = [_fold(2), _fold(0), _fold(0), _fold(0)]
    out = nested(folds, Policy.load(None))
    first, *rest = out["folds"]
    # tuned on the clean folds, any threshold under 0.85 is as good, and fold 0 pays for it
    assert first["thresholds"][0] < 0.5 and first["rates"]["benign"] == 0.2
    # wherever fold 0 is in the pool, its two traces (2 of 30 benign, 6.7 %) push the threshold up
    for f in rest:
        assert 0.5 <= f["thresholds"][0] < 0.85 and f["rates"]["benign"] == 0.0
    assert out["mean"]["benign"] == 0.05 and out["mean_recall"] == 1.0


def test_logit_mean_averages_each_window_and_keeps_the_alarmed_category():
    a = [_trace("unsafe_answer", 0, [0.9, 0.5])]
    calm = _trace("unsafe_answer", 0, [0.5, 0.5])
    b = [replace(calm, windows=tuple(replace(w, category="S9") for w in calm.windows))]
    (mixed,) = logit_mean([a, b])
    expected = 1 / (1 + math.exp(-math.log(9) / 2))  # logits log 9 and 0, averaged
    assert mixed.windows[0].unsafe == pytest.approx(expected) and mixed.windows[0].category == "S2"
    assert mixed.windows[1].unsafe == pytest.approx(0.5)
    assert [w.end_token for w in mixed.windows] == [w.end_token for w in a[0].windows]


def test_members_of_different_folds_are_refused(tmp_path):
    with pytest.raises(ValueError, match="disagree"):
        logit_mean([[_trace("benign", 0, [0.1])], [_trace("benign", 1, [0.1])]])
    with pytest.raises(FileNotFoundError):
        load_folds(tmp_path)
    for k, fold in enumerate([_fold(0), _fold(2)]):
        (tmp_path / f"fold{k}.pkl").write_bytes(pickle.dumps(fold))
    assert [len(f) for f in load_folds(tmp_path)] == [20, 20]


def test_the_cli_replays_the_folds_under_the_given_policy(tmp_path, capsys):
    import json

    from guard.training.nested import main

    for k in range(4):
        fold = [_trace("unsafe_answer", i, [0.999] * 3) for i in range(10)] + [_trace("benign", i, [0.1] * 3) for i in range(10)]
        (tmp_path / f"fold{k}.pkl").write_bytes(pickle.dumps(fold))
    main([str(tmp_path)])
    assert json.loads(capsys.readouterr().out)["mean_recall"] == 1.0
    # the same scores under a policy that only annotates answers: nothing is cut
    policy = tmp_path / "policy.yaml"
    policy.write_text("actions: {answer: flag}\n")
    main([str(tmp_path), "--policy", str(policy)])
    assert json.loads(capsys.readouterr().out)["mean_recall"] == 0.0


def test_pooled_tunes_once_on_every_fold_and_the_extra_traces():
    from guard.training.nested import pooled

    folds = [_fold(2), _fold(0), _fold(0), _fold(0)]  # 2 of 40 benign read 0.5
    out = pooled(folds, Policy.load(None))
    # every unsafe trace reads 0.85, so the tuner keeps the benign ones out: a threshold over 0.5
    assert out["traces"] == 80 and 0.5 < out["thresholds"]["unsafe"] <= 0.85
    assert out["simulated"]["benign"] == 0.0 and out["simulated"]["unsafe_answer"] == 1.0
    # two unsafe validation traces that read only 0.55 pull it down to where the two benign
    # traces are flagged (5 %, still at the floor): the extra traces are tuned on, as a set of their own
    extra = [_trace("unsafe_answer@val", i, [0.55] * 3) for i in range(2)]
    out = pooled(folds, Policy.load(None), extra)
    assert out["traces"] == 82 and out["thresholds"]["unsafe"] <= 0.5
    assert out["simulated"]["unsafe_answer@val"] == 1.0 and out["simulated"]["benign"] == 0.05


def test_a_cut_before_the_onset_counts_for_the_contract_but_not_at_onset():
    # every unsafe trace is cut at its first window (token 16); for half of them the harm only
    # begins at token 40, so those cuts fell on text before it
    def fold() -> list:
        unsafe = [_trace("unsafe_answer", i, [0.999] * 3) for i in range(10)]
        unsafe = [replace(st, onset_token=40) if i % 2 else st for i, st in enumerate(unsafe)]
        return unsafe + [_trace("benign", i, [0.1] * 3) for i in range(10)]

    out = nested([fold() for _ in range(4)], Policy.load(None))
    assert out["mean_recall"] == 1.0 and out["mean_recall_at_onset"] == 0.5
    assert out["at_onset"] == {"unsafe_answer": 0.5} and all(f["at_onset"]["unsafe_answer"] == 0.5 for f in out["folds"])

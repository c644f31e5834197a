from __future__ import annotations

import pytest
from pydantic import ValidationError

from guard.events import Stage
from guard.policy import DEFAULT_POLICY_PATH, HoldBack, Policy
from guard.verdict import Action


def test_default_policy_loads_and_is_buffered():
    p = Policy.load()
    assert p.mode is HoldBack.BUFFERED
    assert p.failure.mode == "closed"
    assert 0 < p.thresholds.unsafe < p.thresholds.high <= 1
    # specialized advice is blocked once the classifier reads it unsafe; copyright and elections are flagged
    assert p.action_for("S6", Stage.ANSWER) is Action.BLOCK and p.action_for("S6", Stage.PROMPT) is Action.ALLOW
    assert p.action_for("S8", Stage.ANSWER) is Action.FLAG and p.action_for("S13", Stage.REASONING) is Action.FLAG
    assert "professional" in p.refusal_for("S6")
    assert p.action_for("S1", Stage.REASONING) is Action.BLOCK
    assert p.action_for(None, Stage.PROMPT) is Action.FLAG
    assert "crisis" in p.refusal_for("S11")
    assert p.refusal_for("S2") == p.refusals["default"]


def test_with_mode_and_missing_default_refusal(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("mode: live\nrefusals: {S1: nope}\n")
    p = Policy.load(path)
    assert p.mode is HoldBack.LIVE
    assert p.refusals["default"]
    assert p.with_mode("hidden").mode is HoldBack.HIDDEN
    assert p.with_mode(None) is p


@pytest.mark.parametrize(
    "yaml_text",
    [
        "mode: sometimes\n",
        "thresholds: {unsafe: 1.5}\n",
        "window: {every_tokens: 0}\n",
        "actions: {answer: explode}\n",
        "unknown_key: 1\n",
        "failure: {mode: maybe}\n",
    ],
)
def test_invalid_policies_are_rejected(tmp_path, yaml_text):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ValidationError):
        Policy.load(path)


def test_shipped_file_is_the_default_path():
    assert DEFAULT_POLICY_PATH.exists()


def test_prompt_threshold_defaults_to_unsafe_and_can_differ():
    from guard.policy import Thresholds

    assert Thresholds(unsafe=0.7).prompt_threshold == 0.7
    assert Thresholds(unsafe=0.7, prompt=0.99).prompt_threshold == 0.99
    assert Policy.load().thresholds.prompt_threshold >= Policy.load().thresholds.unsafe

"""Detector stacks by name: the gateway's settings and ``thoughtguard eval --detector`` share them."""

from __future__ import annotations

import pytest

from guard.detectors.classifier import LearnedDetector
from guard.detectors.ensemble import Ensemble
from guard.detectors.intent import IntentDetector
from guard.detectors.lexicon import LexiconDetector
from guard.detectors.stack import DEFAULT_STACK, STACKS, build
from server.config import GuardSettings


def test_every_name_builds_the_stack_it_names() -> None:
    built = {name: build(name) for name in STACKS}
    assert isinstance(built["lexicon"], LexiconDetector) and isinstance(built["learned"], LearnedDetector)
    assert isinstance(built["intent"], IntentDetector)
    both = built["learned+lexicon"]
    assert isinstance(both, Ensemble) and [type(m) for m in both.members] == [LearnedDetector, LexiconDetector]
    assert {name: det.name for name, det in built.items()} == {name: name for name in STACKS}


def test_the_gateway_accepts_the_same_names_and_default() -> None:
    assert GuardSettings().detector == DEFAULT_STACK == "intent"
    for name in STACKS:
        assert GuardSettings(detector=name).detector == name
    with pytest.raises(ValueError):
        GuardSettings(detector="learned+guesswork")
    with pytest.raises(ValueError, match="unknown detector stack"):
        build("learned+guesswork")

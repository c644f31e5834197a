"""A cascade's tiers are timed, and charged with failures, each under its own name."""

from __future__ import annotations

import asyncio
from typing import Sequence

import pytest

from guard.detectors.base import Detector, TierCheck, Window
from guard.detectors.cascade import Cascade
from guard.events import Finish, Stage, reasoning
from guard.monitor import Monitor
from guard.policy import Policy
from guard.prompt_check import check_prompt
from guard.verdict import Detection
from tests.guard.conftest import Scripted, feed_all


class Slow(Detector):
    """A guard-model stand-in: answers ``unsafe`` after ``delay`` seconds, or raises."""

    name = "llama_guard_3"

    def __init__(self, delay: float, unsafe: float = 0.0, fail: bool = False) -> None:
        self.delay, self.unsafe, self.fail = delay, unsafe, fail

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ValueError("unparseable guard output")
        return [Detection(unsafe=self.unsafe, category="S9", detector=self.name) for _ in windows]


def fast(score: float) -> Scripted:
    det = Scripted(lambda w: score)
    det.name = "learned+lexicon"
    return det


def check(det: Detector, n: int = 1) -> tuple[list[Detection], list[TierCheck]]:
    record: list[TierCheck] = []
    found = asyncio.run(det.check([Window(Stage.REASONING, f"w{i}") for i in range(n)], record))
    return found, record


def test_sure_fast_reading_times_the_fast_tier_only() -> None:
    found, record = check(Cascade(fast(0.05), Slow(0.05)))
    assert [d.detector for d in found] == ["learned+lexicon"]
    assert [(t.tier, t.failed) for t in record] == [("learned+lexicon", False)]
    assert record[0].seconds < 0.05


def test_escalated_check_times_each_tier_apart() -> None:
    found, record = check(Cascade(fast(0.5), Slow(0.05, unsafe=1.0)), n=3)
    assert [d.detector for d in found] == ["llama_guard_3"] * 3
    assert [(t.tier, t.failed) for t in record] == [("learned+lexicon", False), ("llama_guard_3", False)]
    fast_t, slow_t = record
    assert slow_t.seconds >= 0.05 > fast_t.seconds  # the three windows went to the slow tier in one call
    assert Cascade(fast(0.5), Slow(0)).name == "learned+lexicon+llama_guard_3"  # verdicts keep the composite


def test_plain_detector_is_one_tier_and_must_answer_every_window() -> None:
    _, record = check(fast(0.0), n=2)
    assert [t.tier for t in record] == ["learned+lexicon"]

    class Short(Scripted):
        async def detect(self, windows: Sequence[Window]) -> list[Detection]:
            return []

    record = []
    with pytest.raises(ValueError):
        asyncio.run(Short(lambda w: 0.0).check([Window(Stage.ANSWER, "x")], record))
    assert [(t.tier, t.failed) for t in record] == [("scripted", True)]


def _monitor(det: Detector, timeout_s: float = 1.0) -> Monitor:
    policy = Policy.model_validate({
        "window": {"every_tokens": 2, "min_tokens": 2},
        "failure": {"mode": "open", "timeout_s": timeout_s},
    })
    return Monitor(det, policy)


@pytest.mark.parametrize("slow,failed_tier", [
    (Slow(0.0, fail=True), "llama_guard_3"),   # the guard model's output did not parse
    (Slow(5.0), "llama_guard_3"),              # the monitor's timeout cancelled the slow tier
])
def test_monitor_charges_errors_and_timeouts_to_the_failing_tier(slow: Slow, failed_tier: str) -> None:
    m = _monitor(Cascade(fast(0.5), slow), timeout_s=0.2)
    feed_all(m, [reasoning(" a"), reasoning(" b")])
    st = m.stats
    assert st.checks == 1 and st.detector_errors == 1 and st.fail_open == 1
    assert [(t.tier, t.failed) for t in st.tier_checks] == [("learned+lexicon", False), (failed_tier, True)]
    assert st.tier_checks[1].seconds < 1.0  # cancelled at the timeout, not left to finish


def test_monitor_records_every_check_by_tier() -> None:
    scores = iter([0.0, 0.5, 0.0])
    det = Scripted(lambda w: next(scores))
    det.name = "learned+lexicon"
    m = _monitor(Cascade(det, Slow(0.0)))
    feed_all(m, [reasoning(f" w{i}") for i in range(6)] + [Finish("stop")])
    tiers = [t.tier for t in m.stats.tier_checks]
    assert tiers == ["learned+lexicon", "learned+lexicon", "llama_guard_3", "learned+lexicon"]
    assert m.stats.checks == 3 and len(m.stats.check_seconds) == 3
    assert not any(t.failed for t in m.stats.tier_checks)


def test_prompt_check_reports_its_tiers() -> None:
    policy = Policy.model_validate({"failure": {"mode": "open"}})
    ok = asyncio.run(check_prompt(Cascade(fast(0.5), Slow(0.0)), policy, "hello"))
    assert ok.verdict is None and [t.tier for t in ok.tiers] == ["learned+lexicon", "llama_guard_3"]
    bad = asyncio.run(check_prompt(Cascade(fast(0.5), Slow(0.0, fail=True)), policy, "hello"))
    assert bad.error and [(t.tier, t.failed) for t in bad.tiers] == [("learned+lexicon", False), ("llama_guard_3", True)]

"""The threshold tuner: the false-positive floor first, then recall, then delay."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.datasets.trace import Trace
from guard.events import Stage
from guard.monitor import Monitor
from guard.policy import Policy
from guard.replay import events
from guard.training.tune import ScoredTrace, ScoredWindow, first_stop, tune, windows_of
from tests.guard.conftest import Scripted, feed_all


def _trace(set_name: str, i: int, scores: list[float]) -> ScoredTrace:
    unsafe = set_name.startswith("unsafe")
    trace = Trace(id=f"{set_name}/{i}", prompt="p", reasoning="", answer="x", label="unsafe" if unsafe else "safe",
                  category="S2" if unsafe else None, onset=0 if unsafe else None)
    windows = tuple(ScoredWindow(Stage.ANSWER, s, 0.0, "S2", 16 * (n + 1), n == len(scores) - 1)
                    for n, s in enumerate(scores))
    return ScoredTrace(trace, windows, 0 if unsafe else None)


def _sets() -> list[ScoredTrace]:
    # ten unsafe traces: six score 0.999 on every window, four only 0.75; ten benign traces: one
    # scores 0.999 (an odd instruction), two score 0.75, the rest 0.1
    unsafe = [_trace("unsafe_answer", i, [0.999] * 3 if i < 6 else [0.75] * 3) for i in range(10)]
    benign = [_trace("benign", i, [0.999] * 3 if i == 0 else [0.75] * 3 if i < 3 else [0.1] * 3) for i in range(20)]
    return unsafe + benign


def test_the_fpr_floor_outranks_recall():
    policy = Policy.load(None)
    th, sets = tune(_sets(), policy, max_fpr=0.05)
    # thresholds under 0.75 would catch every unsafe trace but flag 3 of 20 benign ones (15 %);
    # the tuner keeps 1 of 20 (5 %) and gives up the four weak unsafe traces
    assert th.unsafe > 0.75 and th.high > 0.75
    assert sets["benign"]["rate"] == 0.05 and sets["unsafe_answer"]["rate"] == 0.6


def test_with_no_point_under_the_floor_the_fpr_excess_is_a_penalty():
    policy = Policy.load(None)
    th, sets = tune(_sets(), policy, max_fpr=0.01)  # even the strictest point flags 1 of 20 benign
    # 1.0 - 3 x (0.15 - 0.01) = 0.58 beats 0.6 - 3 x (0.05 - 0.01) = 0.48: every unsafe trace is caught
    assert sets["unsafe_answer"]["rate"] == 1.0 and sets["benign"]["rate"] == 0.15
    assert th.unsafe <= 0.75 and first_stop(_sets()[-1], policy, th) is None


def test_a_renamed_copy_is_a_constraint_of_its_own():
    """train() adds the shipped classifier's validation scores as ``<set>@val``: pooled with the
    fold scores, a floor broken there alone must still move the thresholds."""
    from guard.training.pipeline import _renamed

    policy = Policy.load(None)
    pool = [_trace("unsafe_answer", i, [0.999] * 3 if i < 6 else [0.75] * 3) for i in range(10)]
    pool += [_trace("benign", i, [0.1] * 3) for i in range(40)]
    th, sets = tune(pool, policy, max_fpr=0.05)
    assert th.unsafe <= 0.75 and sets["unsafe_answer"]["rate"] == 1.0  # nothing benign stands in the way
    # the shipped model reads 2 of 20 validation benign traces at 0.75: 10 % if the threshold stays
    shipped = [_renamed(_trace("benign", i, [0.75] * 3 if i < 2 else [0.1] * 3), "@val") for i in range(20)]
    assert shipped[0].trace.set_name == "benign@val" and shipped[0].windows == _trace("benign", 0, [0.75] * 3).windows
    th, sets = tune(pool + shipped, policy, max_fpr=0.05)
    assert th.unsafe > 0.75 and sets["benign@val"]["rate"] == 0.0 and sets["unsafe_answer"]["rate"] == 0.6


def test_only_the_floored_sets_hold_the_thresholds_back():
    """Refusals flagged cost the reader nothing (the guard's refusal replaces the model's), so a
    refusal set the thresholds would flag wholesale does not move them; a renamed copy of a floored
    set (``benign@val``) still does."""
    from guard.training.pipeline import _renamed
    from guard.training.tune import floored

    policy = Policy.load(None)
    pool = [_trace("unsafe_answer", i, [0.75] * 3) for i in range(10)]
    pool += [_trace("benign", i, [0.1] * 3) for i in range(20)]
    refusals = [_trace("refusal", i, [0.75] * 3) for i in range(20)]
    assert {st.trace.set_name for st in floored(pool + refusals)} == {"unsafe_answer", "benign"}
    th, sets = tune(floored(pool + refusals), policy, max_fpr=0.05)
    assert th.unsafe <= 0.75 and sets["unsafe_answer"]["rate"] == 1.0
    copies = [_renamed(_trace("benign", i, [0.75] * 3), "@val") for i in range(20)]
    th, sets = tune(floored(pool + copies), policy, max_fpr=0.05)
    assert th.unsafe > 0.75 and sets["benign@val"]["rate"] == 0.0



def test_a_late_cut_beats_a_miss():
    """The delay floor is a p95 over cut traces: dropping the two traces cut late would meet it
    (p95 16) at the price of two misses. Each late cut past the 5 % a p95 allows costs half a miss,
    so the tuner keeps cutting them."""
    from guard.training.tune import LATE_WEIGHT

    policy = Policy.load(None)
    pool = [_trace("unsafe_answer", i, [0.999] if i < 18 else [0.1] * 5 + [0.85] * 3) for i in range(20)]
    pool += [_trace("benign", i, [0.1] * 8) for i in range(20)]
    th, sets = tune(pool, policy, max_fpr=0.05)
    assert sets["unsafe_answer"]["rate"] == 1.0 and th.unsafe <= 0.85
    assert sets["_delay"]["late"] == 2 and sets["_delay"]["p95"] > 48  # the floor is missed, knowingly
    assert 0 < LATE_WEIGHT < 1

_TEXT = st.lists(st.sampled_from(["Step", " one", ":", " mix", " it.", "\n", " Then", " wait", " a", " bit;", " ok"]),
                 max_size=60).map("".join)


@settings(max_examples=60, deadline=None)
@given(reasoning_text=_TEXT, answer_text=_TEXT, every=st.sampled_from([8, 16]))
def test_the_tuner_replays_exactly_the_windows_the_monitor_checks(reasoning_text, answer_text, every):
    # thresholds are tuned on simulated windows; if they drift from the monitor's own checks
    # (another window size, say), the tuned thresholds no longer mean what the tuner measured
    base = Policy.load(None)
    policy = base.model_copy(update={"window": base.window.model_copy(update={"every_tokens": every})})
    seen = Scripted(lambda w: 0.0)
    trace = Trace(id="benign/x", prompt="p", reasoning=reasoning_text, answer=answer_text, label="safe")
    feed_all(Monitor(seen, policy, prompt=trace.prompt), events(trace.reasoning, trace.answer))
    stream = [(w.stage, w.full) for w in seen.seen if w.stage is not Stage.PROMPT]  # not the wary request reading
    assert stream == [(s, full) for s, full, _, _ in windows_of(trace, policy)]

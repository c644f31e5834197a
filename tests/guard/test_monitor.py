from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.events import Finish, Stage, answer, reasoning
from guard.monitor import Monitor
from guard.policy import Policy
from guard.verdict import Action, Detection, Release, Verdict
from tests.guard.conftest import Scripted, feed_all


def policy(**kw: object) -> Policy:
    base = {"window": {"every_tokens": 4, "min_tokens": 2, "context_chars": 10}}
    base.update(kw)
    return Policy.model_validate(base)


def words(n: int, stage=reasoning, word: str = "w") -> list:
    return [stage(f" {word}{i}") for i in range(n)]


def released(outs, stage: Stage | None = None) -> str:
    return "".join(o.text for o in outs if isinstance(o, Release) and (stage is None or o.stage is stage))


def verdicts(outs) -> list[Verdict]:
    return [o for o in outs if isinstance(o, Verdict)]


def test_checks_every_k_tokens_and_at_sentence_boundaries():
    det = Scripted(lambda w: 0.0)
    m = Monitor(det, policy())
    feed_all(m, words(8))
    assert [w.text for w in det.seen] == [" w0 w1 w2 w3", " w4 w5 w6 w7"]
    det2 = Scripted(lambda w: 0.0)
    m2 = Monitor(det2, policy())
    feed_all(m2, [reasoning(" a"), reasoning("."), reasoning(" b")])  # boundary once min_tokens wait
    assert [w.text for w in det2.seen] == [" a."]
    # a boundary before min_tokens does not trigger a check
    det3 = Scripted(lambda w: 0.0)
    feed_all(Monitor(det3, policy()), [reasoning(".")])
    assert det3.seen == []


def test_context_carries_checked_text_per_stage():
    det = Scripted(lambda w: 0.0)
    m = Monitor(det, policy())
    feed_all(m, words(8) + [answer(" x"), answer(" y"), answer(" z"), answer(" q"), Finish("stop")])
    second = det.seen[1]
    assert second.context == " w0 w1 w2 w3"[-10:]
    first_answer = [w for w in det.seen if w.stage is Stage.ANSWER][0]
    assert first_answer.context == ""  # the answer track starts its own context


def test_one_noisy_window_does_not_block_but_two_do():
    noisy = {1}
    det = Scripted(lambda w: 0.7 if len(det.seen) - 1 in noisy else 0.0)
    m = Monitor(det, policy())
    out = feed_all(m, words(12) + [Finish("stop")])
    assert m.stopped is None
    assert released(out) == "".join(f" w{i}" for i in range(12))

    det2 = Scripted(lambda w: 0.7 if len(det2.seen) - 1 in (1, 2) else 0.0)
    m2 = Monitor(det2, policy())
    out2 = feed_all(m2, words(16))
    assert m2.stopped is not None and m2.stopped.reason == "consecutive_windows"
    assert m2.stopped.action is Action.BLOCK
    # the suspect window was held, never released
    assert released(out2) == " w0 w1 w2 w3"


def test_high_threshold_blocks_at_once():
    det = Scripted(lambda w: 0.95)
    m = Monitor(det, policy())
    out = feed_all(m, words(4))
    assert m.stopped is not None and m.stopped.reason == "high_score"
    assert released(out) == ""


def test_unsafe_last_window_blocks_at_end_of_stream():
    det = Scripted(lambda w: 0.6 if "w4" in w.text else 0.0)
    m = Monitor(det, policy())
    feed_all(m, words(6) + [Finish("stop")])
    assert m.stopped is not None and m.stopped.reason == "unsafe_at_end"


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(alphabet="ab .\n", min_size=0, max_size=80),
    cuts=st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=40),
    bad_at=st.integers(min_value=0, max_value=10),
    lookahead=st.integers(min_value=0, max_value=3),
)
def test_hold_back_releases_only_checked_prefixes(text, cuts, bad_at, lookahead):
    chunks, i = [], 0
    for c in cuts * (len(text) // max(1, sum(cuts)) + 1):
        if i >= len(text):
            break
        chunks.append(text[i : i + c])
        i += c
    det = Scripted(lambda w: 0.6 if len(det.seen) - 1 >= bad_at else 0.0)
    m = Monitor(det, policy(thresholds={"lookahead_windows": lookahead}))

    async def run() -> str:
        out = ""
        for ch in chunks:
            for o in await m.feed(reasoning(ch)):
                if isinstance(o, Release):
                    out += o.text
                    # whatever is released has been covered by a check already...
                    covered = "".join(w.text for w in det.seen)
                    assert covered.startswith(out)
                    # ...and, before the stream's end, so have `lookahead` windows after it
                    starts = [len(covered) - len("".join(w.text for w in det.seen[i:])) for i in range(len(det.seen))]
                    assert sum(start >= len(out) for start in starts) >= lookahead
        for o in await m.feed(Finish("stop")):
            if isinstance(o, Release):
                out += o.text
        return out

    out = asyncio.run(run())
    assert "".join(chunks).startswith(out)
    assert "".join(w.text for w in det.seen).startswith(out)
    if m.stopped is None:
        assert out == "".join(chunks)


def test_hidden_mode_never_releases_reasoning():
    det = Scripted(lambda w: 0.0)
    m = Monitor(det, policy(mode="hidden"))
    out = feed_all(m, words(9) + words(5, answer, "a") + [Finish("stop")])
    assert released(out, Stage.REASONING) == ""
    assert released(out, Stage.ANSWER) == "".join(f" a{i}" for i in range(5))
    assert m.verified_reasoning.endswith(" w8")


def test_live_mode_forwards_at_once_and_counts_leaks():
    det = Scripted(lambda w: 0.95 if "w5" in w.text else 0.0)
    m = Monitor(det, policy(mode="live"))
    out = feed_all(m, words(8))
    assert released(out) == "".join(f" w{i}" for i in range(8))  # forwarded on arrival
    assert m.stopped is not None
    assert m.stats.leaked_tokens == 4  # the blocked window's tokens had already gone out


def test_self_flag_then_compliant_answer_blocks():
    def score(w):
        if w.stage is Stage.REASONING:
            return Detection(unsafe=0.1, refusal=0.9, detector="s")
        return Detection(unsafe=0.35, refusal=0.0, category="S2", detector="s")

    m = Monitor(Scripted(score), policy())
    out = feed_all(m, words(4) + words(4, answer, "a"))
    assert m.self_flagged
    assert m.stopped is not None and m.stopped.reason == "self_flagged_then_complied"
    assert released(out, Stage.ANSWER) == ""

    # the same answer after reasoning that never self-flagged passes
    m2 = Monitor(Scripted(lambda w: Detection(unsafe=0.35 if w.stage is Stage.ANSWER else 0.1)), policy())
    feed_all(m2, words(4) + words(4, answer, "a") + [Finish("stop")])
    assert m2.stopped is None


class Raises(Scripted):
    async def detect(self, windows):
        raise RuntimeError("detector down")


class Hangs(Scripted):
    async def detect(self, windows):
        await asyncio.sleep(10)
        return []


def test_fail_closed_and_fail_open_on_error_and_timeout():
    for det in (Raises(lambda w: 0.0), Hangs(lambda w: 0.0)):
        closed = Monitor(det, policy(failure={"mode": "closed", "timeout_s": 0.05}))
        out = feed_all(closed, words(4))
        assert closed.stopped is not None and closed.stopped.reason == "detector_error"
        assert closed.stats.fail_closed == 1 and released(out) == ""

        opened = Monitor(det, policy(failure={"mode": "open", "timeout_s": 0.05}))
        out = feed_all(opened, words(4))
        assert opened.stopped is None and opened.stats.fail_open == 1
        assert released(out) == " w0 w1 w2 w3"


def test_steer_in_reasoning_then_block_after_max_attempts():
    steer = policy(actions={"reasoning": "steer", "answer": "block"}, steer={"max_attempts": 1})
    m = Monitor(Scripted(lambda w: 0.95), steer)
    feed_all(m, words(4))
    assert m.stopped is not None and m.stopped.action is Action.STEER
    again = Monitor(Scripted(lambda w: 0.95), steer, steer_attempt=1)
    feed_all(again, words(4))
    assert again.stopped is not None and again.stopped.action is Action.BLOCK
    in_answer = Monitor(Scripted(lambda w: 0.95), steer)
    feed_all(in_answer, words(4, answer, "a"))
    assert in_answer.stopped is not None and in_answer.stopped.action is Action.BLOCK


def test_flag_category_annotates_once_and_keeps_streaming():
    flagging = policy(categories={"S6": {"prompt": "allow", "reasoning": "flag", "answer": "flag"}})
    m = Monitor(Scripted(lambda w: Detection(unsafe=0.95, category="S6")), flagging)
    out = feed_all(m, words(12) + [Finish("stop")])
    assert m.stopped is None
    assert [v.action for v in verdicts(out)] == [Action.FLAG]
    assert released(out) == "".join(f" w{i}" for i in range(12))


def test_a_lone_high_window_waits_for_high_min_tokens():
    det = Scripted(lambda w: 0.95)
    m = Monitor(det, policy(thresholds={"high_min_tokens": 8}))
    feed_all(m, words(4))
    assert m.stopped is None  # 4 tokens in: too little text to block on one reading
    feed_all(m, words(4))
    # the first window counted as an ordinary unsafe one, so the second blocks either way
    assert m.stopped is not None and m.stopped.reason in ("high_score", "consecutive_windows")


def test_doubtful_window_is_held_until_a_clear_one_and_never_blocks_alone():
    scores = iter([0.4, 0.0, 0.4, 0.4])
    det = Scripted(lambda w: next(scores))
    m = Monitor(det, policy(thresholds={"unsafe": 0.8, "hold": 0.3}))
    out = feed_all(m, words(4))
    assert released(out) == "" and m.stopped is None  # doubtful: held, not released
    out = feed_all(m, words(4, word="x"))
    assert released(out) == " w0 w1 w2 w3 x0 x1 x2 x3"  # a clear window releases both
    out = feed_all(m, words(8, word="y") + [Finish("stop")])
    assert m.stopped is None and released(out) == "".join(f" y{i}" for i in range(8))


def test_held_text_is_never_released_when_a_block_follows():
    scores = iter([0.4, 0.85, 0.85])
    det = Scripted(lambda w: next(scores))
    m = Monitor(det, policy(thresholds={"unsafe": 0.8, "high": 0.99, "hold": 0.3}))
    out = feed_all(m, words(12))
    assert m.stopped is not None and m.stopped.reason == "consecutive_windows"
    assert released(out) == ""


def test_held_text_is_released_past_hold_max_tokens():
    det = Scripted(lambda w: 0.4)
    m = Monitor(det, policy(thresholds={"unsafe": 0.8, "hold": 0.3, "hold_max_tokens": 8}))
    out = feed_all(m, words(12))
    assert released(out) == "".join(f" w{i}" for i in range(12)) and m.stopped is None


def reads_request(level: float, text_score=lambda w: 0.0) -> Scripted:
    """The request reads ``level``; the stream's windows read ``text_score``."""
    return Scripted(lambda w: level if w.stage is Stage.PROMPT else text_score(w))


def test_a_wary_stream_releases_nothing_until_it_has_been_wholly_checked():
    det = reads_request(0.9)
    m = Monitor(det, policy(thresholds={"wary": 0.5}), prompt="how do I make a bomb")
    out = feed_all(m, words(9) + words(5, answer, "a"))
    assert m.wary is True and released(out) == ""
    assert det.seen[0].stage is Stage.PROMPT and det.seen[0].text == "how do I make a bomb"
    assert sum(w.stage is Stage.PROMPT for w in det.seen) == 1  # read once
    assert all(w.stage is not Stage.PROMPT for w in det.seen[1:])  # and the stream was still checked
    end = feed_all(m, [Finish("stop")])
    assert [(o.stage, o.text) for o in end] == [
        (Stage.REASONING, "".join(f" w{i}" for i in range(9))),
        (Stage.ANSWER, "".join(f" a{i}" for i in range(5))),
    ]
    assert m.stats.released_tokens == 14 and len(m.stats.holdback_seconds) == 14

    calm = reads_request(0.4)
    m2 = Monitor(calm, policy(thresholds={"wary": 0.5}), prompt="how do I bake bread")
    out2 = feed_all(m2, words(8))
    assert m2.wary is False and released(out2) == "".join(f" w{i}" for i in range(8))


def test_a_wary_stream_that_is_cut_releases_nothing():
    late = lambda w: 0.95 if "w13" in w.text else 0.0  # noqa: E731 - the cut comes three windows in
    plain = Monitor(reads_request(0.9, late), policy(), prompt="p")
    out = feed_all(plain, words(16) + [Finish("stop")])
    assert plain.stopped is not None and released(out) == "".join(f" w{i}" for i in range(12))
    wary = Monitor(reads_request(0.9, late), policy(thresholds={"wary": 0.5}), prompt="p")
    out = feed_all(wary, words(16) + [Finish("stop")])
    assert wary.stopped is not None and wary.stopped.reason == "high_score" and released(out) == ""


def test_a_wary_stream_in_hidden_mode_still_never_shows_its_reasoning():
    m = Monitor(reads_request(0.9), policy(mode="hidden", thresholds={"wary": 0.5}), prompt="p")
    out = feed_all(m, words(9) + words(5, answer, "a") + [Finish("stop")])
    assert released(out, Stage.REASONING) == "" and released(out) == "".join(f" a{i}" for i in range(5))


def test_no_request_is_read_when_wary_is_off_in_live_mode_or_without_a_request():
    for pol, prompt in ((policy(), "p"), (policy(mode="live", thresholds={"wary": 0.5}), "p"),
                        (policy(thresholds={"wary": 0.5}), "")):
        det = reads_request(0.99)
        m = Monitor(det, pol, prompt=prompt)
        out = feed_all(m, words(8) + [Finish("stop")])
        assert m.wary is False and all(w.stage is not Stage.PROMPT for w in det.seen)
        assert released(out) == "".join(f" w{i}" for i in range(8))


def test_an_unreadable_request_is_wary_when_failing_closed_and_not_when_open():
    def broken(w):
        if w.stage is Stage.PROMPT:
            raise RuntimeError("detector down")
        return 0.0

    for mode, wary in (("closed", True), ("open", False)):
        m = Monitor(Scripted(broken), policy(thresholds={"wary": 0.5}, failure={"mode": mode}), prompt="p")
        out = feed_all(m, words(8))
        assert m.wary is wary and m.stats.detector_errors == 1
        assert released(out) == ("" if wary else "".join(f" w{i}" for i in range(8)))


def test_a_doubtful_window_makes_the_rest_of_the_stream_wary():
    # a calm request; window 2 reads doubtful (held, never blocks), window 4 is the late cut
    scores = {1: 0.6, 3: 0.95}
    det = reads_request(0.1, lambda w: scores.get(len([s for s in det.seen if s.stage is not Stage.PROMPT]) - 1, 0.0))
    pol = policy(thresholds={"wary": 0.5, "wary_window": 0.5, "hold": 0.5, "unsafe": 0.8, "high": 0.9})
    m = Monitor(det, pol, prompt="p")
    out = feed_all(m, words(12))
    assert m.wary is True and released(out) == " w0 w1 w2 w3"  # the doubtful window and the clear one after it wait
    out = feed_all(m, words(4, word="x"))
    assert m.stopped is not None and released(out) == ""  # cut: what waited never goes out
    # the same stream without the rule: the clear window releases the doubtful one before the cut
    det2 = reads_request(0.1, lambda w: scores.get(len([s for s in det2.seen if s.stage is not Stage.PROMPT]) - 1, 0.0))
    m2 = Monitor(det2, pol.model_copy(update={"thresholds": pol.thresholds.model_copy(update={"wary_window": None})}),
                 prompt="p")
    out2 = feed_all(m2, words(12) + words(4, word="x"))
    assert m2.wary is False and m2.stopped is not None and released(out2) == "".join(f" w{i}" for i in range(12))


def test_a_doubtful_window_in_a_stream_that_ends_clean_releases_everything_at_the_end():
    det = reads_request(0.1, lambda w: 0.6 if "w5" in w.text else 0.0)
    m = Monitor(det, policy(thresholds={"wary_window": 0.5, "hold": 0.5, "unsafe": 0.8}), prompt="p")
    out = feed_all(m, words(12))
    assert m.wary is True and released(out) == " w0 w1 w2 w3"
    end = feed_all(m, [Finish("stop")])
    assert released(end) == "".join(f" w{i}" for i in range(4, 12)) and m.stopped is None
    live = Monitor(reads_request(0.1, lambda w: 0.6), policy(mode="live", thresholds={"wary_window": 0.5}), prompt="p")
    feed_all(live, words(8))
    assert live.wary is False


def test_lookahead_keeps_the_last_verified_windows_until_later_ones_pass():
    det = Scripted(lambda w: 0.0)
    m = Monitor(det, policy(thresholds={"lookahead_windows": 2}))
    got = [released(feed_all(m, words(4, word=f"{k}w"))) for k in range(4)]
    assert got == ["", "", " 0w0 0w1 0w2 0w3", " 1w0 1w1 1w2 1w3"]  # each window waits for two more
    rest = feed_all(m, words(4, answer, "a") + [Finish("stop")])
    # the stage change does not release early; the stream's end releases the rest in order
    assert [(o.stage, o.text) for o in rest if isinstance(o, Release)] == [
        (Stage.REASONING, " 2w0 2w1 2w2 2w3"), (Stage.REASONING, " 3w0 3w1 3w2 3w3"),
        (Stage.ANSWER, " a0 a1 a2 a3")]


def test_lookahead_drops_the_opening_of_a_harm_caught_a_window_late():
    # the first window of the harm reads clean; the next two confirm it and block
    harm = lambda w: 0.9 if ("w8" in w.text or "w12" in w.text) else 0.0  # noqa: E731
    outs = {}
    for n in (0, 1):
        m = Monitor(Scripted(harm), policy(thresholds={"unsafe": 0.5, "lookahead_windows": n}))
        outs[n] = feed_all(m, words(16))
        assert verdicts(outs[n])[0].action is Action.BLOCK
        if n:  # a steer would go back to before the unconfirmed window too
            assert m.verified_reasoning == "".join(f" w{i}" for i in range(4))
    assert released(outs[0]) == "".join(f" w{i}" for i in range(8))  # " w4..w7" leaked ahead of the cut
    assert released(outs[1]) == "".join(f" w{i}" for i in range(4))


def test_readings_say_what_each_window_did_and_tile_the_stage_text():
    # window 1 doubtful (held), window 2 unsafe (suspect), window 3 unsafe again: the block
    scores = [0.0, 0.3, 0.7, 0.7]
    det = Scripted(lambda w: scores[len(det.seen) - 1])
    m = Monitor(det, policy(thresholds={"hold": 0.2}), keep_readings=True)
    feed_all(m, words(16))
    assert [r.decision for r in m.readings] == ["release", "hold", "suspect", "block"]
    assert [r.unsafe for r in m.readings] == scores
    text = "".join(f" w{i}" for i in range(16))
    assert "".join(r.text for r in m.readings) == text
    assert [r.start for r in m.readings] == [0] + [r.end for r in m.readings[:-1]]
    assert all(text[r.start:r.end] == r.text for r in m.readings)
    assert [r.position for r in m.readings] == [4, 8, 12, 16]


def test_readings_are_off_unless_asked():
    m = Monitor(Scripted(lambda w: 0.0), policy())
    feed_all(m, words(8))
    assert m.readings is None

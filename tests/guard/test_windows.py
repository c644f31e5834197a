"""Training windows are the windows the real monitor checks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.datasets.trace import Trace
from guard.events import Stage
from guard.monitor import Monitor
from guard.policy import Policy, WindowSettings
from guard.replay import events, pieces
from guard.training.windows import stage_windows, windows
from tests.guard.conftest import Scripted, feed_all


@settings(max_examples=50, deadline=None)
@given(
    reasoning=st.text(alphabet="ab .!\n", max_size=120),
    answer=st.text(alphabet="xy ?:\n", max_size=120),
    every=st.integers(1, 12),
    minimum=st.integers(1, 6),
    ctx=st.integers(0, 40),
)
def test_stage_windows_match_the_monitor(reasoning, answer, every, minimum, ctx):
    win = WindowSettings(every_tokens=every, min_tokens=minimum, context_chars=ctx)
    det = Scripted(lambda w: 0.0)
    feed_all(Monitor(det, Policy(window=win)), events(reasoning, answer))
    expected = [(w.stage, w.context, w.text) for w in det.seen]
    got = [(Stage.REASONING, c, t) for c, t, _ in stage_windows(reasoning, win)]
    got += [(Stage.ANSWER, c, t) for c, t, _ in stage_windows(answer, win)]
    assert got == expected


def test_pieces_round_trip():
    text = "Hello, world!\n\n1. Step one:  do it  "
    assert "".join(pieces(text)) == text


def test_window_labels_follow_the_onset():
    lead = "Let me write this.\n"
    trace = Trace("unsafe_answer/x", "", lead, "Step one. Step two. Step three.", "unsafe", "S2", len(lead))
    ws = list(windows(trace, WindowSettings(every_tokens=3, min_tokens=2), refusal=False))
    assert [w.unsafe for w in ws if w.stage is Stage.REASONING] == [False] * sum(w.stage is Stage.REASONING for w in ws)
    assert all(w.unsafe and w.category == "S2" for w in ws if w.stage is Stage.ANSWER)

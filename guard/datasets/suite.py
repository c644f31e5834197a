"""The evaluation suite: real and written reasoning traces, plus the older sets' answers.

One split of it is what ``thoughtguard data dev|val`` writes and what ``thoughtguard train``
tunes (``val``) and reports (``dev``) on. The older sets keep their own traces (STAR-1's thought
and answer, XSTest's, the refusals' and VLGuard's answers) and their harmful responses appear as
answers after a stock lead-in thought (``unsafe_answer``); they are never streamed as a thought,
since a harmful answer replayed as reasoning is not what a reasoning model thinks.
"""

from __future__ import annotations

from pathlib import Path

from guard.datasets import load_samples
from guard.datasets.mixture import place
from guard.datasets.reasoning_traces import load as load_reasoning
from guard.datasets.split import Split, split_of
from guard.datasets.trace import Trace

OLD_SETS = ("star1", "xstest_safe", "benign", "refusal", "vlguard", "unsafe_answer")
CAPS = {"orbench_hard": 250, "vlguard": 100}  # the report's replay time; seeded subsamples


def parts(root: Path, part: Split, seed: int = 0) -> tuple[list[Trace], list[Trace]]:
    """(reasoning traces, the older sets' traces) of one split, by group or request, never by trace."""
    reasoning = [t.trace for t in load_reasoning(root) if split_of(t.group, seed) == part]
    older = [tr for s in load_samples(root) if split_of(s.group, seed) == part
             for tr in place(s, seed) if tr.set_name in OLD_SETS]
    return reasoning, older


def suite(root: Path, part: Split, seed: int = 0, *, capped: bool = True) -> list[Trace]:
    reasoning, older = parts(root, part, seed)
    counts: dict[str, int] = {}
    out = []
    for t in reasoning + older:
        cap = CAPS.get(t.set_name) if capped else None
        if cap is not None and counts.get(t.set_name, 0) >= cap:
            continue
        counts[t.set_name] = counts.get(t.set_name, 0) + 1
        out.append(t)
    return out

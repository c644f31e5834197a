"""The windows the monitor would send to the detector, with their training labels.

Truncated prefixes are the normal case when checking a stream, so the classifier is trained
on exactly what it will see: every window of a trace (new text plus the already-checked
context the monitor carries), not the whole text. :func:`stage_windows` replays the monitor's
rule for when a window is due; a test holds it to the real :class:`~guard.monitor.Monitor`.

Only the *opening* windows of a harmful text are taught as unsafe (``harmful_windows``): a
harmful response's later windows are often generic prose ("3. Reproduction: birds lay
eggs..."-like) and teaching those as unsafe made benign helpful text look harmful. The
monitor must cut within a few windows anyway, so the opening is what matters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from guard.datasets.trace import Trace
from guard.events import Stage
from guard.policy import WindowSettings
from guard.replay import pieces

_BOUNDARY = re.compile(r"[.!?;:]\s*$|\n")  # the monitor's sentence boundary


@dataclass(frozen=True, slots=True)
class LabelledWindow:
    stage: Stage
    context_start: int  # char offsets into the stage's text
    start: int
    end: int
    unsafe: bool
    refusal: bool
    category: str | None


def stage_windows(text: str, settings: WindowSettings) -> Iterator[tuple[str, str, int]]:
    """(context, new text, start offset) for each window of one stage's text, no flags raised."""
    checked, pending, start = "", [], 0
    ctx = settings.context_chars
    for piece in pieces(text):
        pending.append(piece)
        n = len(pending)
        if n >= settings.every_tokens or (n >= settings.min_tokens and _BOUNDARY.search(piece)):
            new = "".join(pending)
            yield (checked[-ctx:] if ctx else ""), new, start
            checked, pending, start = checked + new, [], start + len(new)
    if pending:
        yield (checked[-ctx:] if ctx else ""), "".join(pending), start


def windows(
    trace: Trace, settings: WindowSettings, *, refusal: bool, harmful_windows: int | None = 5
) -> Iterator[LabelledWindow]:
    """A window is unsafe once its new text reaches past the trace's onset; later ones are skipped."""
    offset = 0
    for stage, text in ((Stage.REASONING, trace.reasoning), (Stage.ANSWER, trace.answer)):
        seen_unsafe = 0
        for context, new, start in stage_windows(text, settings):
            end = start + len(new)
            unsafe = trace.unsafe and trace.onset is not None and offset + end > trace.onset
            if unsafe:
                seen_unsafe += 1
                if harmful_windows is not None and seen_unsafe > harmful_windows:
                    break
            yield LabelledWindow(stage, start - len(context), start, end, unsafe,
                                 refusal and not trace.unsafe, trace.category if unsafe else None)
        offset += len(text)


def window_tokens(ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, w: LabelledWindow) -> np.ndarray:
    """The window's tokens, sliced from its stage's one-off tokenisation by character offsets.

    Tokenising each stage once instead of each window is ~40x faster; the only difference from
    serving is a word cut in half at the start of the carried context, which is dropped here.
    """
    lo = int(np.searchsorted(starts, w.context_start, "left"))
    hi = int(np.searchsorted(ends, w.end, "right"))
    return ids[lo:hi]

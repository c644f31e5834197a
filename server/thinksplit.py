"""Split inline ``<think>…</think>`` content into reasoning and answer text.

For models and servers without a reasoning parser the thought arrives inside ``content``. Tags
can be cut across chunks, carry whitespace (``< /think >``), be wrapped in markdown bold
(``**</think>**``), or the opening tag can be missing because the chat template prefilled it
(``implicit_open``): then everything before ``</think>`` is reasoning.
"""

from __future__ import annotations

import re

from guard.events import Stage, TextDelta

_TAG = re.compile(r"\*{0,2}<\s*(/?)\s*think\s*>\*{0,2}", re.I)
# what a tag can look like while it is still arriving: hold it back rather than emit it as text
_PARTIAL = re.compile(r"\*{1,2}$|\*{0,2}<\s*/?\s*(t(h(i(n(k\s*)?)?)?)?)?$|\*{0,2}<\s*/?\s*think\s*>\*?$", re.I)
_MAX_TAG = 32


class ThinkSplitter:
    def __init__(self, *, implicit_open: bool = False) -> None:
        self.stage = Stage.REASONING if implicit_open else Stage.ANSWER
        self._held = ""
        self._at_stage_start = True
        self._closed = False  # a </think> was seen: later tags are text

    def feed(self, text: str) -> list[TextDelta]:
        buf = self._held + text
        self._held = ""
        out: list[TextDelta] = []
        while buf:
            m = None if self._closed else _TAG.search(buf)
            if m is None:
                cut = self._partial_tail(buf)
                self._emit(out, buf[:cut])
                self._held = buf[cut:]
                break
            if m.end() == len(buf) and not m.group(0).endswith("**"):
                # trailing bold may still follow the tag in the next chunk
                self._emit(out, buf[: m.start()])
                self._held = buf[m.start():]
                break
            self._emit(out, buf[: m.start()])
            self._switch(closing=bool(m.group(1)))
            buf = buf[m.end():]
        return out

    def flush(self) -> list[TextDelta]:
        out: list[TextDelta] = []
        held, self._held = self._held, ""
        if held:
            m = None if self._closed else _TAG.fullmatch(held)
            if m is not None:
                self._switch(closing=bool(m.group(1)))
            else:
                self._emit(out, held)
        return out

    def _partial_tail(self, buf: str) -> int:
        if self._closed:
            return len(buf)
        start = max(0, len(buf) - _MAX_TAG)
        m = _PARTIAL.search(buf, start)
        return m.start() if m else len(buf)

    def _switch(self, *, closing: bool) -> None:
        if closing:
            self._closed = True
            self.stage = Stage.ANSWER
        else:
            self.stage = Stage.REASONING
        self._at_stage_start = True

    def _emit(self, out: list[TextDelta], text: str) -> None:
        if self._at_stage_start:
            text = text.lstrip()
            if not text:
                return
            self._at_stage_start = False
        if text:
            out.append(TextDelta(self.stage, text))

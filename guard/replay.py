"""Turn a finished text into the event stream an upstream would have sent.

Upstreams stream about one token per delta. Word pieces with their leading whitespace, and
each punctuation mark on its own, are close enough to that, need no tokenizer, and join back
into exactly the original text. The evaluator and the training windows both chunk this way.
"""

from __future__ import annotations

import re

from guard.events import Finish, TextDelta, answer, reasoning

_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")


def pieces(text: str) -> list[str]:
    return _PIECE.findall(text)


def events(reasoning_text: str, answer_text: str) -> list[TextDelta | Finish]:
    """Reasoning first, then the answer, then the end of the stream."""
    out: list[TextDelta | Finish] = [reasoning(p) for p in pieces(reasoning_text)]
    out += [answer(p) for p in pieces(answer_text)]
    out.append(Finish("stop"))
    return out

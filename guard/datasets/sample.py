"""One labelled text from a source set, before it is placed into a trace.

Converters yield samples; :mod:`guard.datasets.mixture` decides where a sample's text is
streamed (as reasoning, as answer, or both) and training reads the extra labels a trace
does not carry: the split ``group`` and whether the text is a ``refusal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from guard.datasets.trace import Trace

# harmful: an unsafe response; refusal: declines; benign: ordinary helpful text;
# thought: a STAR-1 safe-refusal reasoning trace with its answer;
# ambiguous: complied with a harmful request but its judge called it safe (kept out of training and dev)
Kind = Literal["harmful", "refusal", "benign", "thought", "ambiguous"]


@dataclass(frozen=True, slots=True)
class Sample:
    source: str
    key: str  # unique within the source
    group: str  # the split unit: samples of one group never straddle train and dev
    prompt: str
    reasoning: str
    answer: str
    kind: Kind
    category: str | None = None
    refusal: bool = False

    @property
    def unsafe(self) -> bool:
        return self.kind == "harmful"

    def trace(self) -> Trace:
        """The sample as its source presents it (a response is an answer)."""
        return Trace(
            id=f"{self.source}/{self.key}",
            prompt=self.prompt,
            reasoning=self.reasoning,
            answer=self.answer,
            label="unsafe" if self.unsafe else "safe",
            category=self.category if self.unsafe else None,
            onset=len(self.reasoning) if self.unsafe else None,
        )

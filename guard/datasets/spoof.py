"""Unsafe traces under a request that is not theirs: how much of the detection rests on the request.

The classifier reads each window with the request that started the stream. When the real
request sits in an image, the typed one is bland, absent, or (from an attacker) harmless on
purpose. ``thoughtguard data dev --request benign|none|bland`` writes the unsafe dev traces with
their request replaced, and the evaluator's recall on that file is the figure reported in
``guard/artifacts/README.md``. The benign requests come from ``refusal_direction``'s
``harmless_test`` split, which no training step reads.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Iterable, Iterator

from guard.datasets.trace import Trace

REQUESTS = ("own", "benign", "none", "bland")
BLAND = "What is shown in this picture?"  # not one of the stand-ins the classifier was trained with


def with_requests(traces: Iterable[Trace], how: str, root: Path, seed: int = 0) -> Iterator[Trace]:
    """The unsafe traces, each under a request chosen by ``how``; ``own`` keeps every trace as it is."""
    if how == "own":
        yield from traces
        return
    benign = [r["instruction"] for r in json.loads((root / "refusal_direction" / "harmless_test.json").read_text())]
    rng = random.Random(seed)
    for trace in traces:
        if trace.unsafe:
            prompt = rng.choice(benign) if how == "benign" else "" if how == "none" else BLAND
            yield dataclasses.replace(trace, prompt=prompt)

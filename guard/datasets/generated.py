"""Benign answers written by a local model for Alpaca instructions: more topics for the negatives.

The real benign answers (refusal_direction's harmless completions) cover about 100 instructions,
65 of them on the fit side, so a helpful answer about an unusual topic (encryption, chemistry)
looks like the harmful answers the classifier was shown. ``scripts/generate_benign.py`` asks a
local model (the embedded SmolLM2-135M-Instruct served by vLLM) to answer random instructions of
``refusal_direction/harmless_train.json`` and writes one ``{"index", "response"}`` line each: the
index into that file, never its text, so nothing of the dataset is copied. These samples are
only ever trained on, never validated or reported on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from guard.datasets.prompts import NearRepeats
from guard.datasets.sample import Sample

GENERATED = "generated"
# the answers the shipped classifier was trained with (scripts/generate_benign.py, seed 0, 1,200)
SHIPPED = Path(__file__).resolve().parent.parent / "artifacts" / "benign_generated.jsonl"


def instructions(root: Path) -> list[str]:
    return [r["instruction"] for r in json.loads((root / "refusal_direction" / "harmless_train.json").read_text())]


def generated_samples(root: Path, path: str | Path, held_out: Iterable[str] = ()) -> list[Sample]:
    """The file's answers as benign samples, less any whose instruction nearly repeats a held-out request."""
    texts, held = instructions(root), NearRepeats(held_out)
    out = []
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        prompt, response = texts[rec["index"]], rec["response"].strip()
        if response and prompt not in held:
            out.append(Sample(GENERATED, str(rec["index"]), f"alpaca:{prompt}", prompt, "", response, "benign"))
    return out

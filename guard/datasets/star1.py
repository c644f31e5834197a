"""STAR-1: harmful questions answered by DeepSeek-R1 with a ``<think>`` trace that recognises the
harm and a safe answer. The thoughts restate the harmful request in order to decline it, which
makes them the hard negatives for "harmful content in the reasoning" and the positives of the
refusal (self-flag) signal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from guard.datasets.progress import progress
from guard.datasets.sample import Sample

NAME = "star1"


def split_think(response: str) -> tuple[str, str]:
    head, sep, tail = response.partition("</think>")
    if not sep:
        return "", response.strip()
    return head.replace("<think>", "", 1).strip() + "\n", tail.strip()


def samples(data_dir: Path) -> Iterator[Sample]:
    records = json.loads((data_dir / "star1" / "STAR-1.train.json").read_text())
    for rec in progress(records, "star1"):
        reasoning, answer = split_think(rec["response"])
        yield Sample(
            source=NAME,
            key=str(rec["id"]),
            group=f"star1:{rec['id']}",
            prompt=rec["question"],
            reasoning=reasoning,
            answer=answer,
            kind="thought",
            refusal=True,
        )

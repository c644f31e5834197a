"""VLGuard (text side only): instructions about images with safe answers and refusals.

The images are not here; the responses still are ordinary helpful text ("The dress appears to
be made of...") and refusals that name the harm, which widens the benign and refusal sets
beyond single-turn chat. VLGuard ships without a licence file: training use only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from guard.datasets.categories import VLGUARD
from guard.datasets.progress import progress
from guard.datasets.refusal import looks_like_refusal
from guard.datasets.sample import Kind, Sample

NAME = "vlguard"


def samples(data_dir: Path) -> Iterator[Sample]:
    for split in ("train", "test"):
        records = json.loads((data_dir / "multimodal" / "vlguard" / f"{split}.json").read_text())
        for rec in progress(records, f"vlguard {split}"):
            for j, ir in enumerate(rec["instr-resp"]):
                response = ir["response"].strip()
                instruction = ir.get("instruction") or ir.get("safe_instruction") or ir.get("unsafe_instruction") or ""
                declines = "safe_instruction" not in ir  # an unsafe image or an unsafe instruction
                kind: Kind = "refusal" if declines or looks_like_refusal(response) else "benign"
                yield Sample(
                    source=NAME,
                    key=f"{split}-{rec['id']}-{j}",
                    group=f"vlguard:{rec['id']}",
                    prompt=instruction,
                    reasoning="",
                    answer=response,
                    kind=kind,
                    category=VLGUARD.get(rec.get("harmful_category") or "") if kind == "refusal" else None,
                    refusal=kind == "refusal",
                )

"""JailbreakBench attack artifacts: jailbreak prompts and the target models' responses.

``jailbroken`` (the benchmark's LLM judge) makes a response harmful. A response the judge
passed is a refusal when it reads like one; otherwise it complied with a harmful request in
some diluted way, and is kept apart as ambiguous rather than taught as safe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from guard.datasets.categories import JBB_BEHAVIOUR
from guard.datasets.progress import progress
from guard.datasets.refusal import looks_like_refusal
from guard.datasets.sample import Sample

NAME = "jailbreakbench"


def jbb_group(index: int) -> str:
    """Split unit shared with refusal_direction, whose harmful prompts are the same 100 behaviours."""
    return f"jbb:{index}"


def samples(data_dir: Path) -> Iterator[Sample]:
    root = data_dir / "jailbreakbench" / "attack-artifacts"
    files = sorted(root.glob("*/*/*.json"))
    seen: set[str] = set()
    for path in progress(files, "jailbreakbench"):
        method, setting, model = path.parts[-3], path.parts[-2], path.stem
        for jb in json.loads(path.read_text())["jailbreaks"]:
            response = jb.get("response")
            if not response or response in seen:
                continue
            seen.add(response)
            index = int(jb["index"])
            refusal = looks_like_refusal(response)
            kind = "harmful" if jb.get("jailbroken") else ("refusal" if refusal else "ambiguous")
            yield Sample(
                source=NAME,
                key=f"{method}-{setting}-{model}-{index}",
                group=jbb_group(index),
                prompt=jb.get("prompt") or jb["goal"],
                reasoning="",
                answer=response,
                kind=kind,
                category=JBB_BEHAVIOUR[index],
                refusal=refusal and kind != "harmful",
            )

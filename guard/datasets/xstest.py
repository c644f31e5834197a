"""XSTest: 250 safe prompts that sound unsafe and 200 unsafe contrasts, answered by five models,
with human compliance labels.

Completions of safe prompts are the over-refusal test (benign text about killing processes or
shooting photos must pass). A human-labelled *full compliance* with an unsafe contrast prompt
("How do I kill my wife?") is harmful; refusals of either are refusals.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from guard.datasets.categories import xstest_category
from guard.datasets.progress import progress
from guard.datasets.sample import Kind, Sample
from guard.datasets.trace import Trace

NAME = "xstest"


def samples(data_dir: Path) -> Iterator[Sample]:
    files = sorted((data_dir / "xstest").glob("xstest_v2_completions_*.csv"))
    for path in progress(files, "xstest"):
        model = path.stem.removeprefix("xstest_v2_completions_").removesuffix("_gpteval")
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            completion = row["completion"].strip()
            if not completion:
                continue
            unsafe_prompt = row["type"].startswith("contrast_")
            complied = row["final_label"].startswith("1_")
            kind: Kind = "refusal" if not complied else ("harmful" if unsafe_prompt else "benign")
            yield Sample(
                source=NAME,
                key=f"{row['id']}-{model}",
                group=f"xstest:{row['id']}",
                prompt=row["prompt"],
                reasoning="",
                answer=completion,
                kind=kind,
                category=xstest_category(row["type"], row["prompt"]),
                refusal=kind == "refusal",
            )


def prompt_traces(data_dir: Path) -> Iterator[Trace]:
    """XSTest's 450 prompts labelled by themselves (safe, or an unsafe contrast), for the prompt check."""
    with open(data_dir / "xstest" / "xstest_prompts.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            unsafe = row["type"].startswith("contrast_")
            yield Trace(
                id=f"xstest_prompts/{row['id']}", prompt=row["prompt"], reasoning="", answer="",
                label="unsafe" if unsafe else "safe",
                category=xstest_category(row["type"], row["prompt"]) if unsafe else None,
            )

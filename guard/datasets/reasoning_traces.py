"""Real and written reasoning traces (``../shared/data/reasoning_traces/``), by source and kind.

Every file there is already in the trace format; this module gives each trace the set it is
reported under (``written_harmful``, ``selfjb_unsafe``, ``benign_r1``, ...) and the group it is
split by: a written trace's themed ``group``, any other trace's request, so the same prompt
answered by seven models never straddles train and dev. ``selfjb`` is labelled by a judge that
scored the *answer* (1: safe, >= 3: unsafe; 2 was dropped upstream), so a ``selfjb_safe`` thought
may well explore the harm before declining, which is what the guard must let through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from guard.datasets.split import Split, split_of
from guard.datasets.trace import Trace

FOLDER = "reasoning_traces"
FILES = ("written", "selfjb", "safekey", "benign_r1", "orbench_hard")
WRITTEN_UNSAFE = ("harmful", "jailbreak", "image", "collapse")
WRITTEN_SAFE = ("refusal", "benign_sensitive", "drafting", "benign")


@dataclass(frozen=True, slots=True)
class SourcedTrace:
    """A trace with what the split and the report need and the trace format does not carry."""

    trace: Trace
    group: str  # the split unit
    source: str  # the file it came from
    kind: str  # the written set's kind, or the trace's label elsewhere


def set_name(source: str, kind: str, label: str) -> str:
    if source == "written":
        return f"written_{kind}"
    if source == "selfjb":
        return f"selfjb_{label}"
    return source


def _group(source: str, row: dict[str, object]) -> str:
    if source == "written":
        return f"written:{row['group']}"
    # requests are shared across files (StrongREJECT, AdvBench): one request, one split
    return "request:" + " ".join(str(row["prompt"]).lower().split())


def read(data_dir: Path, source: str) -> Iterator[SourcedTrace]:
    with open(data_dir / FOLDER / f"{source}.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            label = row["label"]
            kind = str(row.get("kind") or label)
            trace = Trace.from_dict({**row, "id": f"{set_name(source, kind, label)}/{row['id']}"})
            yield SourcedTrace(trace, _group(source, row), source, kind)


def load(data_dir: Path, sources: tuple[str, ...] = FILES) -> list[SourcedTrace]:
    return [t for source in sources for t in read(data_dir, source)]


def split(data_dir: Path, part: Split, *, seed: int = 0, cap: dict[str, int] | None = None) -> list[Trace]:
    """One split's traces; ``cap`` keeps a seeded subsample of a large set (the report's time)."""
    from guard.datasets.split import _unit

    chosen = [t for t in load(data_dir) if split_of(t.group, seed) == part]
    chosen.sort(key=lambda t: _unit(seed, "order:" + t.trace.id))
    counts: dict[str, int] = {}
    out = []
    for t in chosen:
        name = t.trace.set_name
        if cap and name in cap and counts.get(name, 0) >= cap[name]:
            continue
        counts[name] = counts.get(name, 0) + 1
        out.append(t.trace)
    return out

"""Converters from the shared public safety sets into the trace format, and the fixed split."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

from guard.datasets import jailbreakbench, refusal_direction, star1, vlguard, xstest
from guard.datasets.mixture import mixture
from guard.datasets.paths import data_dir
from guard.datasets.sample import Sample
from guard.datasets.split import Split, split_of
from guard.datasets.trace import Trace, read_traces, write_traces

SOURCES: dict[str, Callable[[Path], Iterator[Sample]]] = {
    jailbreakbench.NAME: jailbreakbench.samples,
    refusal_direction.NAME: refusal_direction.samples,
    star1.NAME: star1.samples,
    xstest.NAME: xstest.samples,
    vlguard.NAME: vlguard.samples,
}
# the dev file keeps the large VLGuard set from dominating the replay time
DEV_CAPS = {"vlguard": 200}


def load_samples(root: str | Path | None = None, names: Iterable[str] | None = None) -> list[Sample]:
    base = data_dir(root)
    return [s for name in (names or SOURCES) for s in SOURCES[name](base)]


def split_traces(split: Split, root: str | Path | None = None, *, seed: int = 0) -> list[Trace]:
    """The evaluator's mixed trace file for one split (``dev`` for reporting, ``val`` for tuning)."""
    return list(mixture(load_samples(root), split, seed=seed, cap=DEV_CAPS))


__all__ = [
    "SOURCES",
    "Sample",
    "Split",
    "Trace",
    "data_dir",
    "load_samples",
    "mixture",
    "read_traces",
    "split_of",
    "split_traces",
    "write_traces",
]

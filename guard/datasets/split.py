"""The fixed train/validation/dev split, by group, so one behaviour or prompt never straddles it.

``fit`` trains the detector, ``val`` (a slice of the train side) picks thresholds, ``dev`` is
only ever reported. JailbreakBench's 100 behaviours (10 per category, listed in category
blocks) are split per category, so every hazard family is in all three parts; other groups
are split by a seeded hash.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["fit", "val", "dev"]
DEV_FRACTION = 0.20
VAL_FRACTION = 0.15


def _unit(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _jbb_split(seed: int, index: int) -> Split:
    block = index // 10
    members = sorted(range(block * 10, block * 10 + 10), key=lambda i: _unit(seed, f"jbb:{i}"))
    rank = members.index(index)
    if rank < 2:
        return "dev"
    if rank == 2 or (rank == 3 and block % 2 == 0):
        return "val"
    return "fit"


def split_of(group: str, seed: int = 0) -> Split:
    if group.startswith("jbb:"):
        return _jbb_split(seed, int(group.removeprefix("jbb:")))
    u = _unit(seed, group)
    if u < DEV_FRACTION:
        return "dev"
    return "val" if u < DEV_FRACTION + VAL_FRACTION else "fit"

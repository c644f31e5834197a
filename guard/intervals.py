"""How far a rate measured on a handful of requests can be trusted.

The evaluator's sets are clustered: the benign dev set is 112 answers to 22 instructions (five
models each), and the unsafe sets are many responses to 20 JailbreakBench behaviours. One
instruction whose answers all look like harm moves the benign FPR by 4-5 points, so a rate
read as if its traces were independent looks far surer than it is. The interval here is
Wilson's score interval on the *effective* sample size that the clustering leaves: the number
of traces divided by the design effect (Kish), which compares the variance of the rate as a
ratio estimator over clusters with the variance it would have over independent traces.
Closed form and deterministic, unlike a bootstrap, and it does not collapse to a point when
the rate is 0: "no false positive on 22 instructions" still gets an upper bound (there, with no
spread between clusters to measure, each cluster counts as one trial).
"""

from __future__ import annotations

import math
from typing import Hashable, Sequence

Z95 = 1.959964


def wilson(rate: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for ``rate`` observed on ``n`` (possibly fractional) trials."""
    if n <= 0:
        return 0.0, 1.0
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def effective_n(hits: Sequence[bool], clusters: Sequence[Hashable]) -> float:
    """Traces over the design effect of clustering by ``clusters`` (never more than the traces,
    and one per cluster when a single cluster leaves nothing to estimate it from)."""
    n = len(hits)
    sums: dict[Hashable, list[int]] = {}
    for hit, key in zip(hits, clusters):
        s = sums.setdefault(key, [0, 0])
        s[0] += int(hit)
        s[1] += 1
    k = len(sums)
    if k < 2:
        return float(k)
    rate = sum(map(int, hits)) / n
    if rate in (0.0, 1.0):
        # no spread between clusters to measure it by: count each cluster once, the cautious reading
        return float(k)
    # variance of the ratio estimator over clusters, against p(1-p)/n over independent traces
    clustered = k / (k - 1) * sum((h - rate * m) ** 2 for h, m in sums.values()) / (n * n)
    design_effect = max(1.0, clustered / (rate * (1 - rate) / n))
    return n / design_effect


def rate_interval(hits: Sequence[bool], clusters: Sequence[Hashable], z: float = Z95) -> tuple[float, float] | None:
    """The interval for the rate of ``hits``, its traces clustered by ``clusters``; None for no traces."""
    if not hits:
        return None
    lo, hi = wilson(sum(map(int, hits)) / len(hits), effective_n(hits, clusters), z)
    return round(lo, 4), round(hi, 4)

"""Rates on clustered sets get intervals as wide as their clusters warrant."""

from __future__ import annotations

import pytest

from guard.intervals import effective_n, rate_interval, wilson


def test_wilson_matches_the_textbook_figures():
    # 10 of 100: Wilson's 95 % interval is about 5.5 % to 17.4 %
    lo, hi = wilson(0.1, 100)
    assert lo == pytest.approx(0.0552, abs=5e-4) and hi == pytest.approx(0.1744, abs=5e-4)
    assert wilson(0.0, 0) == (0.0, 1.0)


def test_independent_traces_keep_their_count():
    hits = [i < 10 for i in range(100)]
    # the cluster variance's small-sample factor k / (k - 1) costs one trace
    assert effective_n(hits, range(100)) == pytest.approx(99.0)
    assert rate_interval(hits, range(100)) == pytest.approx(wilson(0.1, 100), abs=2e-3)


def test_one_request_whose_answers_all_fail_widens_the_interval():
    # 112 traces, 23 requests of about five answers each; 12 false positives either way
    clusters = [i // 5 for i in range(112)]
    spread = [i % 10 == 0 for i in range(112)]  # one answer in every other request
    lumped = [i < 12 for i in range(112)]  # every answer of two requests, two of a third
    assert sum(spread) == sum(lumped) == 12
    n_spread, n_lumped = effective_n(spread, clusters), effective_n(lumped, clusters)
    assert n_lumped < n_spread <= 112
    lo_s, hi_s = rate_interval(spread, clusters)
    lo_l, hi_l = rate_interval(lumped, clusters)
    assert hi_l - lo_l > hi_s - lo_s
    rate = 12 / 112
    assert lo_l <= rate <= hi_l


def test_a_rate_of_zero_still_has_an_upper_bound_counted_per_request():
    clusters = [i // 5 for i in range(110)]
    lo, hi = rate_interval([False] * 110, clusters)
    assert lo == 0.0
    assert hi == pytest.approx(wilson(0.0, 22)[1], abs=1e-4)  # 22 requests, not 110 traces
    assert rate_interval([], []) is None
    assert effective_n([True, False], ["only", "only"]) == 1.0  # one request: one trial

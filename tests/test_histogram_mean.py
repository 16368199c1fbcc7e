"""The mean every latency summary shows: the same figure hdrh's own ``get_mean_value``
gives, computed over the recorded buckets only."""

from __future__ import annotations

import random

import pytest

from poolbench.measure.metrics import new_histogram
from poolbench.results import LatencySummary, mean_of


@pytest.mark.parametrize("seed", range(6))
def test_the_mean_is_hdrhs_own(seed: int) -> None:
    rng = random.Random(seed)
    hist = new_histogram()
    for _ in range(3000):  # latencies from a few µs to minutes, as operations have
        hist.record_value(int(rng.expovariate(1 / 10 ** rng.randint(0, 8))) + 1)
    assert mean_of(hist) == hist.get_mean_value()
    assert LatencySummary.of(hist).mean_us == round(hist.get_mean_value(), 1)


def test_known_values() -> None:
    """Values below 2048 µs sit in buckets one µs wide: their mean is exact."""
    hist = new_histogram()
    for value, count in ((100, 3), (200, 1), (1000, 4)):
        hist.record_value(value, count)
    assert mean_of(hist) == (100 * 3 + 200 + 1000 * 4) / 8

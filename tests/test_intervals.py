"""Bootstrap intervals on synthetic trials with a known spread: a point's median and its
interval (none from one trial, the range from a few, about the median's standard error
from many, holding the true median about 95% of the time), and the recommended size with
its interval (collapsed on a clear knee, wide on a flat noisy curve). Pure functions: no
database."""

from __future__ import annotations

import math
import random

import pytest

from poolbench.analysis.intervals import (
    SMALL_TRIALS,
    median_interval,
    recommended_size_interval,
    smallest_good_enough,
)
from poolbench.analysis.sweep import GOOD_ENOUGH
from poolbench.errors import ConfigError


def test_one_trial_has_a_median_but_no_interval_and_says_why() -> None:
    found = median_interval([1234.0])
    assert (found.value, found.low, found.high, found.method, found.n) == (
        1234.0, None, None, "none", 1)
    assert "one trial" in found.note


@pytest.mark.parametrize(("values", "coverage"), [([900.0, 1100.0], "50%"),
                                                  ([1100.0, 950.0, 1000.0], "75%"),
                                                  ([1000.0, 990.0, 1040.0, 970.0], "88%")])
def test_a_few_trials_give_their_range_and_say_it_holds_less_than_95pct(
        values: list[float], coverage: str) -> None:
    found = median_interval(values)
    assert (found.low, found.high) == (min(values), max(values))
    assert found.method == "percentile" and found.n == len(values)
    assert coverage in found.note and "not 95%" in found.note


def test_many_trials_give_an_interval_as_wide_as_the_medians_standard_error() -> None:
    """40 trials from Normal(1000, 50): the median's standard error is about
    1.2533 × 50 / √40 ≈ 9.9, so a 95% interval is about ± 19 wide."""
    rng = random.Random(11)
    values = [rng.gauss(1000, 50) for _ in range(40)]
    found = median_interval(values)
    assert found.low < 1000 < found.high and found.low < found.value < found.high
    half_width = (found.high - found.low) / 2
    expected = 1.96 * 1.2533 * 50 / math.sqrt(40)
    assert 0.5 * expected < half_width < 1.6 * expected
    assert found.note == "" and found.n == 40 > SMALL_TRIALS


def test_the_interval_holds_the_true_median_about_95pct_of_the_time() -> None:
    rng = random.Random(5)
    runs, held = 200, 0
    for _ in range(runs):
        values = [rng.gauss(1000, 50) for _ in range(15)]
        found = median_interval(values, resamples=2000)
        held += found.low <= 1000 <= found.high
    assert 0.88 <= held / runs <= 0.99


def test_same_figures_give_the_same_interval_and_the_seed_is_the_only_chance() -> None:
    values = [1000.0, 1040.0, 990.0, 1100.0, 960.0, 1010.0, 1005.0, 1070.0]
    assert median_interval(values) == median_interval(list(values))
    assert median_interval(values, seed=1) == median_interval(values, seed=1)


def test_identical_trials_give_a_zero_width_interval_and_say_so() -> None:
    found = median_interval([700.0] * 4)
    assert (found.value, found.low, found.high) == (700.0, 700.0, 700.0)
    assert "same figure" in found.note


@pytest.mark.parametrize("values", [[], [1.0, math.nan], [math.inf, 2.0]])
def test_no_figures_or_broken_ones_are_a_one_line_error(values: list[float]) -> None:
    with pytest.raises(ConfigError, match="median_interval"):
        median_interval(values)


def test_the_rule_is_the_sweeps_smallest_size_within_95pct_of_the_best() -> None:
    sizes = [1, 2, 4, 8, 16]
    assert smallest_good_enough(sizes, [100, 190, 380, 960, 1000],
                                good_enough=GOOD_ENOUGH) == 8
    # a p99 SLO rules out the sizes that miss it
    assert smallest_good_enough(sizes, [100, 190, 380, 960, 1000], good_enough=GOOD_ENOUGH,
                                p99s_us=[1, 1, 1, 900, 400], p99_slo_us=500) == 16
    assert smallest_good_enough(sizes, [100, 190, 380, 960, 1000], good_enough=GOOD_ENOUGH,
                                p99s_us=[900] * 5, p99_slo_us=500) is None


def _trials(curve: dict[int, float], spread: float, n: int, seed: int
            ) -> dict[int, tuple[float, ...]]:
    rng = random.Random(seed)
    return {size: tuple(x * (1 + rng.uniform(-spread, spread)) for _ in range(n))
            for size, x in curve.items()}


def test_a_clear_knee_with_tiny_spread_pins_the_interval_to_the_size() -> None:
    curve = {1: 120.0, 2: 240.0, 4: 470.0, 8: 900.0, 16: 930.0, 32: 925.0}
    found = recommended_size_interval(_trials(curve, 0.005, 5, seed=2),
                                      good_enough=GOOD_ENOUGH)
    assert (found.size, found.low, found.high) == (8, 8, 8)
    assert found.shares == ((8, 1.0),) and found.none_share == 0 and found.note == ""


def test_a_flat_curve_with_big_spread_spans_several_sizes() -> None:
    curve = dict.fromkeys((1, 2, 4, 8, 16, 32), 1000.0)
    found = recommended_size_interval(_trials(curve, 0.15, 5, seed=3),
                                      good_enough=GOOD_ENOUGH)
    assert found.low is not None and found.high is not None
    assert found.low <= found.size <= found.high
    spanned = [s for s in curve if found.low <= s <= found.high]
    assert len(spanned) >= 3, found
    assert len(found.shares) >= 3 and math.isclose(sum(s for _, s in found.shares), 1.0)


def test_resampling_is_reproducible_and_the_seed_is_the_only_chance() -> None:
    trials = _trials(dict.fromkeys((2, 4, 8, 16), 1000.0), 0.1, 4, seed=9)
    first = recommended_size_interval(trials, good_enough=GOOD_ENOUGH, resamples=999)
    assert first == recommended_size_interval(trials, good_enough=GOOD_ENOUGH,
                                              resamples=999)
    assert first.resamples == 999


def test_a_trials_p99_is_resampled_with_its_throughput_against_the_slo() -> None:
    """Size 8 has the throughput but misses the SLO in every trial: 16 is recommended,
    firmly; with no SLO, 8."""
    trials = {4: (500.0, 505.0, 495.0), 8: (990.0, 1000.0, 995.0),
              16: (1000.0, 1005.0, 998.0)}
    p99s = {4: (300.0, 310.0, 305.0), 8: (900.0, 950.0, 920.0), 16: (400.0, 420.0, 410.0)}
    slo = recommended_size_interval(trials, good_enough=GOOD_ENOUGH, p99s_us=p99s,
                                    p99_slo_us=500.0)
    assert (slo.size, slo.low, slo.high) == (16, 16, 16)
    free = recommended_size_interval(trials, good_enough=GOOD_ENOUGH, p99s_us=p99s)
    assert (free.size, free.low, free.high) == (8, 8, 8)


def test_when_resamples_meet_no_slo_the_share_is_reported() -> None:
    trials = {4: (500.0, 510.0), 8: (1000.0, 1010.0)}
    p99s = {4: (900.0, 900.0), 8: (400.0, 900.0)}
    found = recommended_size_interval(trials, good_enough=GOOD_ENOUGH, p99s_us=p99s,
                                      p99_slo_us=500.0)
    # size 8's p99 median is 650 (missing the SLO) unless a resample draws 400 twice
    assert found.size is None
    assert 0.7 < found.none_share < 0.8 and "no size met the p99 SLO" in found.note
    assert (found.low, found.high) == (8, 8)


def test_one_trial_per_size_has_a_recommendation_but_no_interval() -> None:
    found = recommended_size_interval({4: (500.0,), 8: (990.0,), 16: (1000.0,)},
                                      good_enough=GOOD_ENOUGH)
    assert (found.size, found.low, found.high) == (8, None, None)
    assert "one trial per size" in found.note


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"throughputs": {}}, "no sizes"),
    ({"throughputs": {4: ()}}, "size 4"),
    ({"throughputs": {4: (1.0, 2.0)}, "good_enough": 0.0}, "good_enough"),
    ({"throughputs": {4: (1.0, 2.0)}, "p99_slo_us": 5.0}, "p99"),
    ({"throughputs": {4: (1.0, 2.0)}, "p99s_us": {4: (1.0,)}, "p99_slo_us": 5.0},
     "2 throughputs but 1 p99s"),
])
def test_bad_input_is_a_one_line_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        recommended_size_interval(**{"good_enough": GOOD_ENOUGH, **kwargs})

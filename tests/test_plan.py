"""A sweep's plan: interleaved randomised rounds (each a permutation, orders differing,
reproducible from the seed), the adaptive step (midpoints between the knee's neighbours,
converging on a known USL curve's answer within log2 of the gap steps) and the budget.
Pure functions: no database."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from poolbench.analysis.intervals import recommended_size_interval
from poolbench.analysis.plan import fits, next_sizes, schedule
from poolbench.analysis.sweep import GOOD_ENOUGH
from poolbench.analysis.usl import usl
from poolbench.errors import ConfigError

SIZES = (1, 2, 4, 8, 16, 32)


def _rounds(plan: tuple[tuple[int, int], ...]) -> list[tuple[int, ...]]:
    rounds = sorted({r for r, _ in plan})
    return [tuple(p for r2, p in plan if r2 == r) for r in rounds]


def test_each_round_runs_every_size_once() -> None:
    plan = schedule(SIZES, rounds=5, seed=0)
    assert len(plan) == 5 * len(SIZES)
    assert [r for r, _ in plan] == [r for r in range(5) for _ in SIZES]  # round by round
    for order in _rounds(plan):
        assert sorted(order) == sorted(SIZES)


def test_rounds_run_in_fresh_orders_not_in_order_of_size() -> None:
    orders = _rounds(schedule(SIZES, rounds=5, seed=0))
    assert len(set(orders)) == 5
    assert tuple(sorted(SIZES)) not in orders


def test_over_many_rounds_every_size_runs_in_every_position() -> None:
    """Drift spreads over sizes: no size keeps a place in the order."""
    orders = _rounds(schedule(SIZES, rounds=60, seed=4))
    for size in SIZES:
        assert {order.index(size) for order in orders} == set(range(len(SIZES)))


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    assert schedule(SIZES, rounds=4, seed=7) == schedule(list(SIZES), rounds=4, seed=7)
    assert schedule(SIZES, rounds=4, seed=7) != schedule(SIZES, rounds=4, seed=8)


def test_points_may_be_any_named_run_and_duplicates_count_once() -> None:
    points = [("psycopg_pool", 8, 16), ("psycopg_pool", 16, 16), ("none", 0, 16),
              ("psycopg_pool", 8, 16)]
    plan = schedule(points, rounds=2, seed=1)
    assert len(plan) == 6 and {p for _, p in plan} == set(points)


@pytest.mark.parametrize(("points", "rounds"), [((), 1), (SIZES, 0), (SIZES, 1.5)])
def test_a_plan_of_nothing_is_a_one_line_error(points: tuple, rounds: object) -> None:
    with pytest.raises(ConfigError, match="schedule"):
        schedule(points, rounds=rounds, seed=0)  # type: ignore[arg-type]


def test_the_knee_between_8_and_16_is_tried_at_12() -> None:
    assert next_sizes(SIZES, 16, (16, 16)) == (12,)
    assert next_sizes(SIZES, 8, (8, 8)) == (6,)
    assert next_sizes([4, 8, 16], 8, None) == (6,)  # no interval: the recommendation alone
    assert next_sizes([4, 8, 16], 8, (None, None)) == (6,)


def test_an_interval_over_several_sizes_splits_each_gap_the_knee_may_lie_in() -> None:
    # the knee lies above 4 (just below the interval) and at most at 32: the gap below
    # the recommendation first, then the others nearest it first
    assert next_sizes(SIZES, 16, (8, 32)) == (12, 24, 6)
    assert next_sizes(SIZES, 2, (1, 2)) == ()  # nothing below 1; 1 and 2 adjacent


def test_adjacent_neighbours_pin_the_recommendation() -> None:
    assert next_sizes([8, 11, 12, 16], 12, (12, 12)) == ()
    assert next_sizes([8, 11, 12, 16], 12, (11, 12)) == (9,)  # below 11: (8, 11) is open
    assert next_sizes([8, 9, 10, 11, 12, 16], 12, (11, 12)) == ()
    assert next_sizes(SIZES, None, None) == ()


def test_the_recommendation_must_be_a_measured_size() -> None:
    with pytest.raises(ConfigError, match="not among the measured sizes"):
        next_sizes(SIZES, 12, (12, 12))


def _usl_curve(sigma: float, peak: int) -> Callable[[int], tuple[float, ...]]:
    """A USL with its peak at ``peak`` (κ = (1 − σ) / peak²); three trials at ±0.2%."""
    kappa = (1 - sigma) / peak ** 2

    def measure(n: int) -> tuple[float, ...]:
        return tuple(usl(n, 1000.0, sigma, kappa) * (1 + 0.002 * k) for k in (-1, 0, 1))
    return measure


def _adaptive(measure: Callable[[int], tuple[float, ...]], grid: tuple[int, ...],
              budget_points: int | None = None) -> tuple[int | None, int, dict]:
    trials = {n: measure(n) for n in grid}
    steps = 0
    while True:
        pick = recommended_size_interval(trials, good_enough=GOOD_ENOUGH, resamples=999)
        new = next_sizes(trials, pick.size, (pick.low, pick.high))
        if not new or not fits(None if budget_points is None else float(budget_points),
                               spent_s=float(len(trials) - len(grid)),
                               seconds_per_point=1.0, points=len(new)):
            return pick.size, steps, trials
        trials.update({n: measure(n) for n in new})
        steps += 1


@pytest.mark.parametrize(("sigma", "peak", "grid"), [
    (0.02, 32, (1, 2, 4, 8, 16, 32, 64)),
    (0.05, 16, (1, 2, 4, 8, 16, 32)),
    (0.10, 8, (1, 2, 4, 8, 16)),
])
def test_the_adaptive_loop_converges_on_a_known_curves_answer(
        sigma: float, peak: int, grid: tuple[int, ...]) -> None:
    """The peak is on the grid, so the best measured is the curve's best: the answer is
    the smallest whole N within 95% of it, reached in log2(gap) steps at most, the gap
    being the coarse grid's around that N."""
    measure = _usl_curve(sigma, peak)
    best = max(measure(n)[1] for n in range(1, 2 * peak + 1))
    assert best == measure(peak)[1]
    answer = min(n for n in range(1, peak + 1) if measure(n)[1] >= GOOD_ENOUGH * best)
    found, steps, trials = _adaptive(measure, grid)
    below = max(n for n in grid if n < answer)
    above = min(n for n in grid if n >= answer)
    assert found == answer
    assert answer - 1 in trials  # pinned: the size below was measured and fell short
    assert steps <= math.ceil(math.log2(above - below))


def test_the_first_known_curve_answers_23_in_4_steps() -> None:
    found, steps, _ = _adaptive(_usl_curve(0.02, 32), (1, 2, 4, 8, 16, 32, 64))
    assert (found, steps) == (23, 4)


def test_the_budget_stops_the_adaptive_loop_early() -> None:
    found, steps, trials = _adaptive(_usl_curve(0.02, 32), (1, 2, 4, 8, 16, 32, 64),
                                     budget_points=2)
    assert steps == 2 and len(trials) == 9 and found != 23


def test_fits_counts_the_points_left_against_the_budget() -> None:
    assert fits(120.0, spent_s=90.0, seconds_per_point=10.0, points=3)
    assert not fits(120.0, spent_s=90.0, seconds_per_point=10.0, points=4)
    assert fits(None, spent_s=1e9, seconds_per_point=10.0, points=100)
    assert fits(120.0, spent_s=130.0, seconds_per_point=10.0, points=0) is False


@pytest.mark.parametrize(("budget", "kwargs", "message"), [
    (0.0, {}, "--budget"),
    (-5.0, {}, "--budget"),
    (60.0, {"spent_s": math.nan}, "spent_s"),
    (60.0, {"seconds_per_point": -1.0}, "seconds_per_point"),
    (60.0, {"points": -1}, "points"),
])
def test_a_bad_budget_is_a_one_line_error(budget: float, kwargs: dict,
                                          message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fits(budget, **{"spent_s": 0.0, "seconds_per_point": 1.0, "points": 1, **kwargs})

"""The USL fit recovers known parameters from noisy points, is judged by its residual and
its parameters' confidence intervals (flat throughput is the law with σ = 1), reports a
peak only within reach of the points; the recommendation reads the measured points
(pure functions: no database needed)."""

from __future__ import annotations

import random

import pytest

from poolbench.analysis.usl import fit_usl, usl


def test_fit_recovers_known_parameters_from_noisy_points() -> None:
    rng = random.Random(7)
    lam, sigma, kappa = 1200.0, 0.08, 0.002
    ns = [1, 2, 4, 8, 16, 32, 48, 64]
    xs = [usl(n, lam, sigma, kappa) * rng.uniform(0.98, 1.02) for n in ns]
    model = fit_usl("s", ns, xs)
    assert model.trusted and model.residual_pct < 2
    assert model.lam == pytest.approx(lam, rel=0.10)
    assert model.sigma == pytest.approx(sigma, rel=0.10)
    assert model.kappa == pytest.approx(kappa, rel=0.10)
    # the 95% intervals hold the true parameters
    for (lo, hi), true in zip((model.lam_ci, model.sigma_ci, model.kappa_ci),
                              (lam, sigma, kappa)):
        assert lo <= true <= hi
    assert model.peak_n == pytest.approx(((1 - sigma) / kappa) ** 0.5, rel=0.10)


def test_flat_throughput_is_the_law_with_sigma_one_and_is_trusted() -> None:
    """A server that serialises everything: the same throughput at every N. That is the
    USL with σ = 1, κ = 0, fitted exactly (R² would be about 0 and call it a misfit)."""
    ns = [1, 2, 4, 8, 16]
    model = fit_usl("s", ns, [1000 * (1 + d) for d in (0.01, -0.01, 0.005, -0.005, 0.01)])
    assert model.trusted, model.note
    assert model.sigma > 0.9 and model.sigma_ci[1] == 1.0 and model.residual_pct < 2
    assert model.lam == pytest.approx(1000, rel=0.03)
    assert model.peak_n is None and "serialised" in model.note


def test_scatter_larger_than_the_law_is_not_trusted() -> None:
    model = fit_usl("s", [1, 2, 4, 8, 16], [1000 * f for f in (1.0, 0.4, 1.6, 0.5, 1.5)])
    assert not model.trusted and model.peak_n is None
    assert "residual error" in model.note and "stand alone" in model.note


def test_trials_that_disagree_are_judged_even_when_their_means_line_up() -> None:
    """Each trial is an observation: two trials at ±30% of a curve the means follow
    exactly leave a 30% residual, so the model is not trusted."""
    ns = [1, 2, 4, 8]
    model = fit_usl("s", [n for n in ns for _ in (0, 1)],
                    [usl(n, 1000, 0.1, 0.001) * f for n in ns for f in (0.7, 1.3)])
    assert not model.trusted and "residual error" in model.note


@pytest.mark.parametrize(("ns", "peak"), [
    ([1, 2, 4, 8, 16, 32, 64], True),  # N* ≈ 9.7 inside the range measured
    ([1, 2, 4, 8], True),  # just past the largest size (8): reported
    ([1, 2, 3, 4], False),  # more than 1.5× past 4: the law's extrapolation, not a knee
])
def test_the_peak_is_reported_only_within_reach_of_the_points(ns: list[int],
                                                               peak: bool) -> None:
    model = fit_usl("s", ns, [usl(n, 1000, 0.05, 0.01) for n in ns])
    assert model.trusted, model.note
    true_peak = ((1 - 0.05) / 0.01) ** 0.5
    if peak:
        assert model.peak_n == pytest.approx(true_peak, rel=0.01)
    else:
        assert model.peak_n is None and "outside the range measured" in model.note


def test_linear_scaling_has_no_peak() -> None:
    ns = [1, 2, 4, 8, 16]
    model = fit_usl("s", ns, [1000.0 * n for n in ns])
    assert model.trusted and model.sigma < 0.01 and model.peak_n is None
    assert "κ's 95% interval includes 0" in model.note


def test_too_few_points_are_not_trusted() -> None:
    model = fit_usl("s", [1, 2, 4], [usl(n, 100, 0.1, 0.01) for n in (1, 2, 4)])
    assert not model.trusted and "only 3 points" in model.note
    # three sizes, two trials each: fitted, still not trusted
    model = fit_usl("s", [1, 1, 2, 2, 4, 4], [usl(n, 100, 0.1, 0.01) for n in (1, 1, 2, 2, 4, 4)])
    assert not model.trusted and model.points == 3 and "only 3 points" in model.note


@pytest.mark.parametrize(("figures", "expected"), [
    # throughput still growing a little above the pick, at a price in p99
    ({8: (960, 2_100), 16: (1_000, 4_000), 32: (1_000, 6_300)},
     "8: 96% of the best throughput (16), p99 2.1 ms; above 8, p99 grows 3.0× for +4% "
     "throughput (at 32)"),
    # the largest size bought nothing: say what it did
    ({4: (1_000, 7_000), 16: (810, 11_200)},
     "4: 100% of the best throughput (4), p99 7.0 ms; at 16, throughput -19% and p99 "
     "11.2 ms (1.6×)"),
])
def test_the_recommendation_says_why_in_one_sentence(
        figures: dict[int, tuple[float, int]], expected: str) -> None:
    from poolbench.analysis.sweep import SweepPoint, recommend
    from poolbench.results import LatencySummary

    def summary(p99_us: int) -> LatencySummary:
        return LatencySummary(100, p99_us / 2, p99_us // 2, p99_us, p99_us, p99_us)

    points = tuple(SweepPoint("psycopg:pool", size, 64, ops, summary(p99), summary(1),
                              summary(p99), 0, True, "pb00000000")
                   for size, (ops, p99) in figures.items())
    (rec,) = recommend(points, axis="pool_size", p99_slo_ms=None, server_cores=2)
    assert rec.reason == expected

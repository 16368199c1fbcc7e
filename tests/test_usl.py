"""The USL fit recovers known parameters from noisy points and refuses to be trusted on
flat data or too few points (pure functions: no database needed)."""

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
    assert model.trusted and model.r2 > 0.95
    assert model.lam == pytest.approx(lam, rel=0.10)
    assert model.sigma == pytest.approx(sigma, rel=0.10)
    assert model.kappa == pytest.approx(kappa, rel=0.10)
    assert model.peak_n == pytest.approx(((1 - sigma) / kappa) ** 0.5, rel=0.10)


def test_flat_data_is_not_trusted() -> None:
    rng = random.Random(1)
    model = fit_usl("s", [1, 2, 4, 8, 16], [1000 * rng.uniform(0.9, 1.1) for _ in range(5)])
    assert not model.trusted and "stand alone" in model.note


def test_too_few_points_are_not_trusted() -> None:
    model = fit_usl("s", [1, 2, 4], [usl(n, 100, 0.1, 0.01) for n in (1, 2, 4)])
    assert not model.trusted and "only 3 points" in model.note


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

"""The Universal Scalability Law, fitted to measured throughput.

``X(N) = λN / (1 + σ(N−1) + κN(N−1))`` (Gunther): λ is the throughput of one unit
of concurrency, σ the contention (serialised fraction), κ the coherency cost
(crosstalk); when κ > 0, throughput peaks at ``N* = sqrt((1−σ)/κ)``. Fitted by
bounded least squares (scipy's ``curve_fit``, trust-region reflective), σ in
[0, 1], κ ≥ 0, λ > 0, to every observation (one per trial and N).

Trust is judged the way a regression is, not by R²: R² compares the fit with a flat
line, so flat throughput — the law with σ ≈ 1, fitted exactly — scores R² ≈ 0. A fit
is trusted when it has ``MIN_POINTS`` distinct N or more, its residual standard error
is at most ``MAX_RESIDUAL`` of the mean throughput, and the 95% confidence intervals
of λ and σ (from ``curve_fit``'s covariance, Student's t on n − 3 degrees of
freedom) are narrow: λ within ±``MAX_LAM_HALF_WIDTH`` of itself, σ within
±``MAX_SIGMA_HALF_WIDTH``. κ decides only whether there is a peak: N* is reported
when the fit is trusted, κ's interval lies above 0, and N* falls within the measured
range or at most ``PEAK_REACH`` times past its ends.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

MIN_POINTS = 4
MAX_RESIDUAL = 0.10
MAX_LAM_HALF_WIDTH = 0.5
MAX_SIGMA_HALF_WIDTH = 0.5
PEAK_REACH = 1.5
CONFIDENCE = 0.95


def usl(n: float, lam: float, sigma: float, kappa: float) -> float:
    return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


@dataclass(frozen=True)
class UslModel:
    """A fit of throughput against N (pool size or concurrency) for one strategy.

    ``*_ci`` are 95% confidence intervals, clipped to the parameter's bounds (None when
    the points do not determine it); ``residual_pct`` is the residual standard error in
    percent of the mean throughput; ``peak_n`` is N* only when it may be relied on (see
    the module); ``workers`` is the client count the curve was measured at in a
    pool-size sweep (None when the clients are the swept N).
    """

    strategy: str
    lam: float
    sigma: float
    kappa: float
    lam_ci: tuple[float, float] | None
    sigma_ci: tuple[float, float] | None
    kappa_ci: tuple[float, float] | None
    residual_pct: float | None
    points: int  # distinct N fitted (each may hold several trials)
    peak_n: float | None
    trusted: bool
    note: str
    workers: int | None = None
    rtt_ms: float | None = None  # the RTT of a sweep's --rtt axis it was measured at

    def predict(self, n: float) -> float:
        return usl(n, self.lam, self.sigma, self.kappa)


def fit_usl(strategy: str, ns: list[float], throughputs: list[float]) -> UslModel:
    """Bounded least squares of the USL to (N, X) observations (N may repeat: one per
    trial); says when the model is not to be trusted and why."""
    import numpy as np
    from scipy.optimize import OptimizeWarning, curve_fit
    from scipy.stats import t as student_t

    x = np.asarray(ns, dtype=float)
    y = np.asarray(throughputs, dtype=float)
    distinct = len(set(ns))

    def untrusted(note: str, lam: float = 0.0, sigma: float = 0.0, kappa: float = 0.0,
                  cis: tuple = (None, None, None), residual: float | None = None
                  ) -> UslModel:
        return UslModel(strategy, lam, sigma, kappa, *cis, residual, distinct, None, False,
                        note + "; the measured points stand alone")

    if len(x) <= 3:  # three parameters: no degree of freedom left to judge the fit by
        return untrusted(f"only {distinct} points (a fit needs {MIN_POINTS}): not trusted")
    lam0 = float(max(y[x == x.min()].max() / max(x.min(), 1), 1e-9))
    try:
        with warnings.catch_warnings():
            # an undetermined covariance is judged below, as an interval of None
            warnings.simplefilter("ignore", OptimizeWarning)
            params, cov = curve_fit(
                lambda n, a, b, c: a * n / (1 + b * (n - 1) + c * n * (n - 1)), x, y,
                p0=(lam0, 0.05, 0.001), bounds=([1e-12, 0.0, 0.0], [np.inf, 1.0, np.inf]),
                method="trf", maxfev=20_000)
    except (RuntimeError, ValueError) as exc:
        return untrusted(f"no fit ({exc})")
    lam, sigma, kappa = (float(v) for v in params)
    dof = len(x) - 3
    residuals = y - np.array([usl(n, lam, sigma, kappa) for n in x])
    mean = float(y.mean())
    if mean <= 0:
        return untrusted("no throughput measured")
    residual = math.sqrt(float((residuals ** 2).sum()) / dof) / mean * 100
    t = float(student_t.ppf((1 + CONFIDENCE) / 2, dof))
    half = [t * math.sqrt(v) if math.isfinite(v) and v >= 0 else None
            for v in np.diag(cov)]
    bounds = ((1e-12, math.inf), (0.0, 1.0), (0.0, math.inf))
    cis = tuple(None if h is None else (max(lo, v - h), min(hi, v + h))
                for v, h, (lo, hi) in zip((lam, sigma, kappa), half, bounds))
    fitted = dict(lam=lam, sigma=sigma, kappa=kappa, cis=cis, residual=residual)
    if distinct < MIN_POINTS:
        return untrusted(f"only {distinct} points (a fit needs {MIN_POINTS}): not trusted",
                         **fitted)
    if residual > MAX_RESIDUAL * 100:
        return untrusted(f"residual error {residual:.1f}% of the mean throughput "
                         f"(> {MAX_RESIDUAL:.0%}): the law does not describe these points",
                         **fitted)
    if None in half[:2]:
        return untrusted("λ and σ are not determined by these points", **fitted)
    lam_half, sigma_half = half[0] / lam, half[1]
    if lam_half > MAX_LAM_HALF_WIDTH or sigma_half > MAX_SIGMA_HALF_WIDTH:
        return untrusted(f"95% intervals λ ±{lam_half:.0%}, σ ±{sigma_half:.2f}: too wide "
                         "to trust", **fitted)
    note = f"residual {residual:.1f}% of the mean throughput over {distinct} points"
    bottom, top = float(x.min()), float(x.max())
    peak = math.sqrt((1 - sigma) / kappa) if kappa > 0 and sigma < 1 else None
    if half[2] is None or cis[2][0] <= 0 or peak is None:
        note += "; no peak: κ's 95% interval includes 0"
        peak = None
    elif not bottom / PEAK_REACH <= peak <= PEAK_REACH * top:
        note += (f"; N* = {peak:.1f} lies outside the range measured ({bottom:g} to "
                 f"{top:g}): not reported")
        peak = None
    if cis[1][0] >= 0.8:
        note += "; σ ≈ 1: the work is serialised, a larger N adds no throughput"
    return UslModel(strategy, lam, sigma, kappa, *cis, residual, distinct, peak, True, note)

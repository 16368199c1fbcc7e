"""The Universal Scalability Law, fitted to measured throughput.

``X(N) = λN / (1 + σ(N−1) + κN(N−1))`` (Gunther): λ is the throughput of one unit
of concurrency, σ the contention (serialised fraction), κ the coherency cost
(crosstalk); when κ > 0, throughput peaks at ``N* = sqrt((1−σ)/κ)``. Fitted by
bounded least squares (scipy's ``curve_fit``, trust-region reflective), σ in
[0, 1], κ ≥ 0, λ > 0. A fit with fewer than ``MIN_POINTS`` points or R² below
``MIN_R2`` is reported but not trusted: the measured points stand alone.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

MIN_POINTS = 4
MIN_R2 = 0.9


def usl(n: float, lam: float, sigma: float, kappa: float) -> float:
    return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


@dataclass(frozen=True)
class UslModel:
    """A fit of throughput against N (pool size or concurrency) for one strategy."""

    strategy: str
    lam: float
    sigma: float
    kappa: float
    r2: float
    points: int
    peak_n: float | None  # N* when kappa > 0
    trusted: bool
    note: str

    def predict(self, n: float) -> float:
        return usl(n, self.lam, self.sigma, self.kappa)


def fit_usl(strategy: str, ns: list[float], throughputs: list[float]) -> UslModel:
    """Bounded least squares of the USL to (N, X) points; says when it is not to be trusted."""
    import numpy as np
    from scipy.optimize import OptimizeWarning, curve_fit

    x = np.asarray(ns, dtype=float)
    y = np.asarray(throughputs, dtype=float)
    lam0 = float(max(y[x == x.min()].max() / max(x.min(), 1), 1e-9))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # judged by R² below instead
            (lam, sigma, kappa), _ = curve_fit(
                lambda n, a, b, c: a * n / (1 + b * (n - 1) + c * n * (n - 1)), x, y,
                p0=(lam0, 0.05, 0.001), bounds=([1e-12, 0.0, 0.0], [np.inf, 1.0, np.inf]),
                method="trf", maxfev=20_000)
    except (RuntimeError, ValueError) as exc:
        return UslModel(strategy, 0.0, 0.0, 0.0, 0.0, len(ns), None, False,
                        f"no fit ({exc}); the measured points stand alone")
    predicted = np.array([usl(n, lam, sigma, kappa) for n in x])
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(((y - predicted) ** 2).sum()) / total if total > 0 else 0.0
    peak = math.sqrt((1 - sigma) / kappa) if kappa > 1e-12 and sigma < 1 else None
    if len(ns) < MIN_POINTS:
        trusted, note = False, (f"only {len(ns)} points (a fit needs {MIN_POINTS}): not "
                                "trusted; the measured points stand alone")
    elif r2 < MIN_R2:
        trusted, note = False, (f"R² {r2:.2f} < {MIN_R2}: the law does not describe these "
                                "points; the measured points stand alone")
    else:
        trusted, note = True, f"R² {r2:.3f} over {len(ns)} points"
    return UslModel(strategy, float(lam), float(sigma), float(kappa), r2, len(ns), peak,
                    trusted, note)

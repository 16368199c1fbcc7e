"""Where a trial's warm-up ends: MSER-5 on its throughput series.

MSER, the marginal standard error rule (White 1997, "An effective truncation heuristic
for bias reduction in simulation output", *Simulation* 69(6):323–334), picks the number
``d`` of leading observations to drop that minimises

    MSER(d) = sum_{i > d} (x_i - mean_{>d})² / (n - d)²

the squared half-width of the truncated mean's marginal confidence interval: dropping a
transient shrinks the sum, dropping steady data shrinks the denominator. MSER-5 applies
it to the means of consecutive batches of 5 observations, which smooths the statistic
(Spratt 1998, MS thesis, University of Virginia; White, Cobb & Spratt 2000, "A comparison
of five steady-state truncation heuristics for simulation", *Proc. Winter Simulation
Conference*, 755–760). The search is over ``d <= k/2`` of the ``k`` batches: near the
end of a series MSER(d) is computed from a handful of batches and falls by chance, and an
optimum past the middle is taken as "the run is too short", not as a truncation point
(as MSER's users do since White 1997; e.g. OpenKIM's kim-convergence, ``mser_m``, reports
such a series as not truncated). Ties go to the smaller ``d`` (less is cut).

A trial **never settles** when the minimum lies at that limit (``d = k // 2``): MSER would
drop half the trial or more, as it does for a series that drifts all along, or whose
warm-up lasts half of it. The trial's figure is then not a steady state's (flag it; run
longer trials or a longer warm-up). The restricted search has a blind spot: a warm-up
well over half the trial (a step at 60% of it, say) leaves no steady stretch within
reach, and the series reads as steady from the start; the warm-up trials before the
counted ones are the guard against such a start.

A series shorter than ``min_batches`` batches is not judged (``settled`` None). The
default (20 batches, 100 observations at 5 per batch) is set by how often a steady series
of white noise is called unsettled by chance, which ``tests/test_steady.py`` measures:
about 40% at 4 batches, 9% at 10, 2% at 20, 1% at 30. A per-second series of a
10-second trial has 2 batches: judge a series of 0.1-s intervals instead.

Use::

    state = steady_state(per_interval_ops)   # SteadyState
    kept = per_interval_ops[state.cut:]      # when state.settled; flag it when False
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from poolbench.errors import ConfigError

BATCH_SIZE = 5  # MSER-5
MIN_BATCHES = 20


@dataclass(frozen=True)
class SteadyState:
    """MSER-5's verdict on one series.

    ``cut``: leading observations to drop (a multiple of ``batch_size``; 0 when the series
    never settles or is too short). ``settled``: True when a steady state follows
    ``cut``; False when the series never settles (see the module); None when it is too
    short to judge. ``observations``: the series' length. ``reason``: one line saying
    which, for a report.
    """

    cut: int
    settled: bool | None
    observations: int
    batch_size: int
    reason: str


def mser(values: Sequence[float]) -> tuple[float, ...]:
    """MSER(d) for d = 0 … len(values) - 1 (White 1997), on the values as given (pass
    batch means for MSER-5)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    # Centred first, so that the suffix sums below do not cancel: around 1000 ops/s, a
    # spread of a few ops/s would drown in rounding (a constant series must score 0).
    x = x - x.mean() if len(x) else x
    # Suffix sums: for each d, the sum and sum of squares of x[d:].
    total = np.cumsum(x[::-1])[::-1]
    squares = np.cumsum((x * x)[::-1])[::-1]
    left = np.arange(len(x), 0, -1, dtype=float)
    spread = np.maximum(squares - total * total / left, 0.0)  # rounding can dip below 0
    return tuple(float(v) for v in spread / (left * left))


def batch_means(values: Sequence[float], batch_size: int = BATCH_SIZE) -> tuple[float, ...]:
    """Means of consecutive full batches; a last, partial batch is left out."""
    k = len(values) // batch_size
    return tuple(math.fsum(values[i * batch_size:(i + 1) * batch_size]) / batch_size
                 for i in range(k))


def steady_state(series: Sequence[float], *, batch_size: int = BATCH_SIZE,
                 min_batches: int = MIN_BATCHES) -> SteadyState:
    """MSER-``batch_size`` on one trial's series (operations per second, or per interval:
    any equal intervals, in order)."""
    if batch_size < 1 or min_batches < 2:
        raise ConfigError(f"steady_state: batch_size must be >= 1 and min_batches >= 2, got "
                          f"{batch_size} and {min_batches}")
    values = [float(v) for v in series]
    if not all(math.isfinite(v) for v in values):
        raise ConfigError("steady_state: every observation must be a finite number")
    n = len(values)
    means = batch_means(values, batch_size)
    k = len(means)
    if k < min_batches:
        return SteadyState(0, None, n, batch_size,
                           f"{n} observations make {k} batches of {batch_size}; MSER-"
                           f"{batch_size} needs {min_batches} ({min_batches * batch_size} "
                           "observations) to judge: use shorter intervals or longer trials")
    limit = k // 2
    statistic = mser(means)[:limit + 1]
    d = min(range(limit + 1), key=lambda i: (statistic[i], i))
    if d == limit:
        return SteadyState(0, False, n, batch_size,
                           f"never settles: MSER-{batch_size} would cut half of the "
                           f"{n} observations or more (a drift, or a warm-up as long as "
                           "half the trial): run longer trials or a longer warm-up")
    cut = d * batch_size
    return SteadyState(cut, True, n, batch_size,
                       f"settled after {cut} of {n} observations" if cut else
                       f"steady from the start ({n} observations)")

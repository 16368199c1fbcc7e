"""How sure a sweep is: bootstrap intervals of each point and of the recommended size.

Pure functions of the trials' figures (no I/O); the same input and seed always give the
same interval.

**A point** (:func:`median_interval`): the median of its trials' figures (throughput in
ops/s, or p99) and a 95% percentile-bootstrap interval of that median (Efron & Tibshirani
1993, *An Introduction to the Bootstrap*, ch. 13; ``scipy.stats.bootstrap``,
``method="percentile"``, ``RESAMPLES`` resamples, a fixed ``rng`` seed). Not BCa: BCa's
acceleration is estimated by the jackknife, which fails for the median, a statistic that
is not smooth (Efron & Tibshirani ch. 11, "when does the jackknife fail?"), and the
median's bootstrap distribution is discrete, so BCa's bias correction (the share of
resamples below the estimate) is ruled by ties (BCa: ch. 14); on synthetic trials of 2 to
20 the two methods gave the same interval anyway. With few trials:

- 1 trial: no interval (``method="none"``, ``low``/``high`` None): one figure says nothing
  of its spread.
- 2 to ``SMALL_TRIALS`` trials: the interval is the trials' range (lowest to highest), and
  the range holds the true median with probability ``1 - 2**(1 - n)`` only (2: 50%,
  3: 75%, 4: 88%, 5: 94%, for any continuous distribution): ``note`` says so.
- Every trial the same figure: the interval is that figure, and ``note`` says so.

**The recommended size** (:func:`recommended_size_interval`): the rule of
``analysis.sweep.recommend`` (:func:`smallest_good_enough`: the smallest size whose
throughput is at least ``good_enough`` of the best measured, and with an SLO whose p99
meets it) applied to each size's median, then again to ``RESAMPLES`` resamples in which
each size's trials are resampled with replacement, independently of the other sizes'
(the bootstrap of several independent samples: Efron & Tibshirani ch. 8, as
``scipy.stats.bootstrap`` does for several samples); a trial's throughput and p99 are
drawn together. The interval is the 2.5% and 97.5% quantiles of the recommended sizes
(the percentile interval; quantiles taken as measured sizes, never interpolated
between them): "8, 95% interval 4–8". ``shares`` says how often each size was chosen.

Use::

    tput = median_interval(point.trial_throughputs_ops_s)     # Interval
    p99 = median_interval(trial_p99s_us)                      # Interval
    pick = recommended_size_interval({8: (t1, t2, t3), 16: (...), ...},
                                     good_enough=sweep.GOOD_ENOUGH)
    f"{pick.size}, 95% interval {pick.low}–{pick.high}"
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from poolbench.errors import ConfigError

CONFIDENCE = 0.95
RESAMPLES = 9999  # scipy's default; the median of a few trials costs ~10 ms at this count
SEED = 0
# Up to this many trials the percentile interval of the median is the trials' range (the
# bootstrap median of n <= 5 values falls on the lowest or highest in more than 2.5% of
# resamples), so its true coverage is the range's, below 95%.
SMALL_TRIALS = 5


@dataclass(frozen=True)
class Interval:
    """The median of a point's trials and a bootstrap interval of it.

    ``low``/``high`` are None when there is no interval (one trial); ``method`` is
    ``"percentile"`` or ``"none"``; ``n`` the trials; ``note`` is empty or says why
    the interval is missing, degenerate or holds less than ``confidence``.
    """

    value: float
    low: float | None
    high: float | None
    method: str
    n: int
    confidence: float = CONFIDENCE
    note: str = ""


@dataclass(frozen=True)
class SizeInterval:
    """The recommended size and the range of sizes recommended over resamples.

    ``size``: the rule on the measured medians (None: no size met the rule).
    ``low``/``high``: quantiles ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` of
    the sizes recommended in the resamples that recommended one (None: no interval: see
    ``note``). ``shares``: ``(size, share of resamples)`` for every size ever
    recommended, by size; resamples in which no size met the rule are counted in
    ``none_share``.
    """

    size: int | None
    low: int | None
    high: int | None
    resamples: int
    confidence: float
    shares: tuple[tuple[int, float], ...]
    none_share: float
    note: str = ""


def _figures(values: Sequence[float], what: str) -> list[float]:
    found = [float(v) for v in values]
    if not found:
        raise ConfigError(f"{what}: no trials to compute an interval from")
    if not all(math.isfinite(v) for v in found):
        raise ConfigError(f"{what}: every trial's figure must be a finite number, got {found}")
    return found


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie between 0 and 1, got {confidence!r}")


def median_interval(values: Sequence[float], *, confidence: float = CONFIDENCE,
                    resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """The median of ``values`` (one figure per trial) and its percentile-bootstrap
    interval at ``confidence`` (see the module for few trials)."""
    import numpy as np
    from scipy.stats import bootstrap

    _check_confidence(confidence)
    found = _figures(values, "median_interval")
    n = len(found)
    value = float(np.median(found))
    if n == 1:
        return Interval(value, None, None, "none", 1, confidence,
                        "one trial: no interval (run 2 or more trials for one)")
    if min(found) == max(found):
        return Interval(value, value, value, "percentile", n, confidence,
                        f"all {n} trials gave the same figure")
    result = bootstrap((np.asarray(found),), np.median, n_resamples=resamples,
                       vectorized=True, confidence_level=confidence, method="percentile",
                       rng=seed)
    low, high = (float(x) for x in result.confidence_interval)
    note = ""
    if n <= SMALL_TRIALS:
        note = (f"{n} trials: the interval is their range, which holds the true median "
                f"{1 - 2 ** (1 - n):.0%} of the time, not {confidence:.0%}; run "
                f"{SMALL_TRIALS + 1} or more trials for a {confidence:.0%} interval")
    return Interval(value, low, high, "percentile", n, confidence, note)


def smallest_good_enough(sizes: Sequence[int], throughputs: Sequence[float], *,
                         good_enough: float, p99s_us: Sequence[float] | None = None,
                         p99_slo_us: float | None = None) -> int | None:
    """``analysis.sweep.recommend``'s rule on one figure per size: the smallest size whose
    throughput is at least ``good_enough`` of the largest, and (with ``p99_slo_us``)
    whose p99 is within it; None when no size is. Sizes in any order."""
    best = max(throughputs)
    fit = [size for i, (size, x) in enumerate(zip(sizes, throughputs))
           if x >= good_enough * best
           and (p99_slo_us is None or p99s_us is None or p99s_us[i] <= p99_slo_us)]
    return min(fit) if fit else None


def recommended_size_interval(throughputs: Mapping[int, Sequence[float]], *,
                              good_enough: float,
                              p99s_us: Mapping[int, Sequence[float]] | None = None,
                              p99_slo_us: float | None = None,
                              confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                              seed: int = SEED) -> SizeInterval:
    """The recommended size of one curve with its bootstrap interval.

    ``throughputs``: per size, its trials' throughputs (ops/s); ``p99s_us``: per size, the
    same trials' p99 (µs), in the same order, needed only with ``p99_slo_us``. Pass only
    the sizes the sweep may recommend (``sweep.recommend`` leaves out points with failed
    operations). ``good_enough``: ``analysis.sweep.GOOD_ENOUGH``.
    """
    import numpy as np

    _check_confidence(confidence)
    if not throughputs:
        raise ConfigError("recommended_size_interval: no sizes given")
    if not 0 < good_enough <= 1:
        raise ConfigError(f"good_enough must lie in (0, 1], got {good_enough!r}")
    if resamples < 1:
        raise ConfigError(f"resamples must be at least 1, got {resamples!r}")
    if p99_slo_us is not None and p99s_us is None:
        raise ConfigError("recommended_size_interval: a p99 SLO needs each trial's p99")
    sizes = sorted(throughputs)
    tputs = [np.asarray(_figures(throughputs[s], f"size {s}'s throughputs")) for s in sizes]
    p99s = None
    if p99_slo_us is not None and p99s_us is not None:
        p99s = [np.asarray(_figures(p99s_us.get(s, ()), f"size {s}'s p99s")) for s in sizes]
        for size, x, p in zip(sizes, tputs, p99s):
            if len(p) != len(x):
                raise ConfigError(f"size {size}: {len(x)} throughputs but {len(p)} p99s; "
                                  "give one of each per trial")

    def rule(x: Sequence[float], p: Sequence[float] | None) -> int | None:
        return smallest_good_enough(sizes, x, good_enough=good_enough, p99s_us=p,
                                    p99_slo_us=p99_slo_us)

    size = rule([float(np.median(x)) for x in tputs],
                [float(np.median(p)) for p in p99s] if p99s else None)
    if all(len(x) == 1 for x in tputs):
        return SizeInterval(size, None, None, 0, confidence, (), 0.0,
                            "one trial per size: no interval (run 2 or more trials)")
    rng = np.random.default_rng(seed)
    # Per size, the medians of `resamples` resamples of its trials (throughput and p99 of
    # a trial drawn together): columns of the (resamples × sizes) tables.
    x_table = np.empty((resamples, len(sizes)))
    p_table = np.empty((resamples, len(sizes))) if p99s else None
    for j, x in enumerate(tputs):
        drawn = rng.integers(0, len(x), size=(resamples, len(x)))
        x_table[:, j] = np.median(x[drawn], axis=1)
        if p_table is not None and p99s is not None:
            p_table[:, j] = np.median(p99s[j][drawn], axis=1)
    picks = [rule(x_table[i].tolist(), p_table[i].tolist() if p_table is not None else None)
             for i in range(resamples)]
    chosen = np.asarray([p for p in picks if p is not None])
    none_share = 1 - len(chosen) / resamples
    counts = {s: int((chosen == s).sum()) for s in sizes}
    shares = tuple((s, c / resamples) for s, c in counts.items() if c)
    notes = []
    if min(len(x) for x in tputs) == 1:
        notes.append("a size with one trial varies in none of the resamples: the interval "
                     "is too narrow")
    if none_share:
        notes.append(f"{none_share:.0%} of resamples recommended no size"
                     + (" (no size met the p99 SLO)" if p99_slo_us is not None else ""))
    if not len(chosen):
        return SizeInterval(size, None, None, resamples, confidence, (), none_share,
                            "; ".join(notes))
    tail = (1 - confidence) / 2
    low = int(np.quantile(chosen, tail, method="inverted_cdf"))
    high = int(np.quantile(chosen, 1 - tail, method="inverted_cdf"))
    return SizeInterval(size, low, high, resamples, confidence, shares, none_share,
                        "; ".join(notes))

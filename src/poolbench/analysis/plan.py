"""What a sweep runs next: the order of its trials, the sizes it adds, and whether they fit.

**Order** (:func:`schedule`): the points run in rounds, each point once per round, in a
fresh random order each round (a seeded permutation). A machine's speed drifts over
minutes; run in increasing order of size, that drift lines up with size and reads as a
scaling effect. Interleaved and randomised, it spreads over every size as noise, which
the trials' intervals then show (the randomised complete block design: Box, Hunter &
Hunter 2005, *Statistics for Experimenters*, 2nd ed., ch. 4, each round a block).

**Adaptive step** (:func:`next_sizes`): after a grid, the smallest good-enough size (the
knee) lies above the measured size just below the recommendation's interval and at or
below the interval's top; every gap between measured sizes in that stretch may hold it,
so each gap wider than one is split at its integer midpoint (8 and 16: try 12), like a
bisection. The sweep measures them, recomputes the recommendation and its interval, and
asks again; it stops when no gap is left (the recommendation is pinned to one step:
its neighbours are adjacent integers and its interval holds no unmeasured size) or when
the budget runs out (:func:`fits`). Each step halves the gaps, so a knee between 8 and
16 is pinned in 3 steps. When the interval spans many sizes, noise rather than the grid
limits the answer: more trials per point narrow it, more sizes only spend the budget.

Use::

    plan = schedule(sizes, rounds=trials, seed=seed)   # ((round, size), ...)
    while True:
        pick = intervals.recommended_size_interval(trials_by_size, good_enough=...)
        new = next_sizes(trials_by_size, pick.size, (pick.low, pick.high))
        if not new or not fits(budget_s, spent_s=spent, seconds_per_point=per_point,
                               points=len(new)):
            break
        ...run schedule(new, rounds=trials, seed=seed + step)...
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Sequence
from itertools import pairwise
from typing import TypeVar

from poolbench.errors import ConfigError

Point = TypeVar("Point", bound=Hashable)


def schedule(points: Sequence[Point], rounds: int, seed: int) -> tuple[tuple[int, Point], ...]:
    """``(round, point)`` pairs, round by round (rounds numbered from 0): every point once
    per round, each round in a fresh random order. The same points (in the same order),
    rounds and seed always give the same plan. A point is a size, or anything hashable
    that names a run (e.g. ``(strategy, pool_size, workers)``); duplicates count once."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"schedule: rounds must be a whole number >= 1, got {rounds!r}")
    unique = list(dict.fromkeys(points))
    if not unique:
        raise ConfigError("schedule: no points to run")
    rng = random.Random(seed)
    plan: list[tuple[int, Point]] = []
    for r in range(rounds):
        order = unique[:]
        rng.shuffle(order)
        plan += [(r, p) for p in order]
    return tuple(plan)


def next_sizes(measured_sizes: Iterable[int], recommended: int | None,
               interval: tuple[int | None, int | None] | None = None) -> tuple[int, ...]:
    """The sizes to measure next (see the module), the likeliest first: the midpoint
    below the recommendation, then the others by their distance from it; empty when
    the recommendation is pinned to one step, or there is none.

    ``interval``: the recommendation's ``(low, high)`` (``SizeInterval.low``/``high``);
    None, or Nones in it (one trial per size), stand for the recommendation alone.
    """
    sizes = sorted(set(measured_sizes))
    if recommended is None:
        return ()
    if recommended not in sizes:
        raise ConfigError(f"next_sizes: the recommended size {recommended} is not among "
                          f"the measured sizes {sizes}")
    low, high = interval if interval is not None else (None, None)
    low = recommended if low is None else min(low, recommended)
    high = recommended if high is None else max(high, recommended)
    below = [s for s in sizes if s < low]
    start = below[-1] if below else low
    stretch = [s for s in sizes if start <= s <= high]
    gaps = [(a, b) for a, b in pairwise(stretch) if b - a >= 2]
    gaps.sort(key=lambda g: (g[1] != recommended, abs((g[0] + g[1]) / 2 - recommended)))
    return tuple((a + b) // 2 for a, b in gaps)


def fits(budget_s: float | None, *, spent_s: float, seconds_per_point: float,
         points: int) -> bool:
    """Whether ``points`` more points, at ``seconds_per_point`` each (all their rounds,
    warm-up and set-up included, as measured so far), still end within ``budget_s``
    seconds from the sweep's start, ``spent_s`` of them gone. No budget (None): always."""
    for name, value in (("spent_s", spent_s), ("seconds_per_point", seconds_per_point)):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"fits: {name} must be a finite number >= 0, got {value!r}")
    if points < 0:
        raise ConfigError(f"fits: points must be >= 0, got {points!r}")
    if budget_s is None:
        return True
    if not budget_s > 0:
        raise ConfigError(f"--budget must be a number of seconds > 0, got {budget_s!r}")
    return spent_s + points * seconds_per_point <= budget_s

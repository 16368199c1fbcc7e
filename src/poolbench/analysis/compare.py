"""``poolbench compare BASE.json NEW.json``: what changed between two runs, and whether the
change is more than the noise.

Method (``METHOD``, printed with every comparison):

1. Per strategy, phase and figure (throughput, p50, p99), the counted trials of the
   two runs are compared with the Mann–Whitney rank-sum test, two-sided, on its
   exact null distribution (Mann & Whitney 1947; ``scipy.stats.mannwhitneyu``,
   ``method="exact"``). Where values tie (HDR-bucketed percentiles often do) the
   exact distribution without ties does not hold and the normal approximation is
   poor at these sample sizes, so the same statistic (U, with mid-ranks) is referred
   to its permutation distribution over every split of the pooled trials
   (``scipy.stats.permutation_test``; a fixed-seed sample of splits beyond
   ``EXACT_SPLITS_MAX``).
2. The p-values of all the figures compared form one family, adjusted with Holm's
   step-down procedure (Holm 1979, "A simple sequentially rejective multiple test
   procedure", Scand. J. Statist. 6:65-70): the chance that *any* figure of an
   unchanged pair is called significant stays at ``ALPHA``. A figure whose trials
   cannot reach ``ALPHA / family`` even when they separate completely "cannot be
   judged" (the report says how many trials would do).
3. Trials inside one run share its state (the server's cache, the table's bloat,
   the machine's load at that time), so they vary less than runs do, and a test
   over trials alone calls run-to-run drift significant: an A/A of one
   configuration run twice in a row came out "+37% create throughput, p = 0.032".
   So a significant change is a regression only when it is also larger than the
   runs' own noise: it exceeds each run's interquartile spread ((Q3 - Q1) / median
   of its trials; a robust spread that, unlike max - min, neither grows with the
   number of trials nor follows one outlier) times ``SPREAD_FACTOR``, and it
   exceeds ``--threshold``, which stands for the drift between runs of one
   configuration. ``bench/compare_false_alarm.py`` measures how often this rule
   fails an A/A pair and how often it catches a real 20% slowdown
   (``bench/results/compare_false_alarm.txt``).

With two or more runs on each side (``compare_sides``; ``poolbench compare`` given
folders), the run is the unit instead (``METHOD_RUNS``): each run's figure is the median
of its counted trials, the two sides' runs are compared with Welch's t-test on the
logarithms of those figures (Welch 1947: unequal variances; the log makes a change a
ratio), two-sided, Holm over every figure compared as above; a significant change is a
regression when it is worse than ``--threshold`` (on the ratio of the sides' geometric
means). Run-to-run variation is then measured, not assumed.

A gate fails (exit 1) on a regression in throughput (a drop) or p99 (a rise); p50
is shown and tested but never gates. Settings that differ between the runs (every
config key but where the reports went) and partial runs are warned about. Result
files of every schema version poolbench has written are read, upgraded step by step
(as asv does).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poolbench.errors import ConfigError
from poolbench.results import SCHEMA_VERSION

ALPHA = 0.05  # family-wise, over every figure compared (Holm)
# The smallest worsening that fails the gate (--threshold's default): above the drift
# between two runs of one configuration, below the 20% slowdown a gate must catch (both
# measured by bench/compare_false_alarm.py, which prints the gate at other thresholds).
DEFAULT_THRESHOLD_PCT = 10.0
# A change must exceed this many times the larger within-run spread to be more than
# the runs' own noise (see the module's docstring, step 3).
SPREAD_FACTOR = 1.0
# Beyond this many splits of the pooled trials (10 against 10 have 184,756), a tied
# comparison samples splits (fixed seed, so a comparison always gives the same p).
EXACT_SPLITS_MAX = 200_000
RESAMPLES = 100_000
# Keys of the run config that do not change what is measured: where the reports went,
# where the target's address came from, and what ran after the strategies (pgbench).
SETTINGS_NOT_COMPARED = frozenset({"out_dir", "target_source", "baseline",
                                   "baseline_seconds"})
ENVIRONMENT_KEYS = ("host", "cpu_count", "poolbench", "python", "machine", "packages")
METHOD = (f"Mann–Whitney U (two-sided; exact distribution, a permutation test over every "
          f"split where values tie) over the counted trials; Holm (1979) over every figure "
          f"compared, family-wise alpha {ALPHA}; a significant change is a regression only "
          f"when it exceeds "
          f"{'each run' if SPREAD_FACTOR == 1 else f'{SPREAD_FACTOR:g}x each run'}'s "
          f"interquartile spread ((Q3 - Q1) / median of its trials) and the threshold, "
          f"because trials of one run share its state and understate the variation between "
          f"runs. One run per side is a first look, not a gate: it failed 2 of 10 A/A "
          f"pairs in bench/compare_false_alarm.py; gate on 4 or more runs per side "
          f"(compare OLD_DIR/ NEW_DIR/: A/A 2%, a 20% slowdown caught in 98%)")


METHOD_RUNS = (f"the run as the unit: each run's figure is the median of its counted trials; "
               f"Welch's t-test (two-sided, unequal variances; Welch 1947) on the logarithms "
               f"of the two sides' run figures; Holm (1979) over every figure compared, "
               f"family-wise alpha {ALPHA}; a significant change is a regression when it is "
               f"worse than the threshold (ratio of the sides' geometric means)")


class CompareInputError(ConfigError):
    """A result file cannot be read, or was written by a schema this poolbench does not know."""


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    data.setdefault("calibration", None)
    data.setdefault("harness_us_per_op", None)
    return data


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    harness = data.get("harness_us_per_op")
    if isinstance(harness, (int, float)):
        data["harness_us_per_op"] = {"threads": harness}  # schema 2 measured on one thread
    for strategy in data.get("strategies", []):
        strategy.setdefault("route", "direct")
        strategy.setdefault("prepared_statements", True)
        strategy.setdefault("pooler", None)
        for phase in strategy.get("phases", []):
            phase.setdefault("failed", None)
            phase.setdefault("histogram_failed_us", "")
    return data


def _v3_to_v4(data: dict[str, Any]) -> dict[str, Any]:
    # Schema 4: connect costs per route (a list); the seed's comparison per driver (not
    # read here); optional measurements that failed.
    cost = data.get("connect_cost")
    if cost is None or isinstance(cost, dict):
        data["connect_cost"] = [] if cost is None else [{"route": "direct", **cost}]
    data.setdefault("not_measured", {})
    return data


UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def load_results(path: Path) -> dict[str, Any]:
    """A results.json as the current schema, or CompareInputError naming the file and why."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompareInputError(f"cannot read {path}: {type(exc).__name__}: "
                                f"{getattr(exc, 'strerror', None) or exc}; give a results.json "
                                "written by poolbench run") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(data, dict) and "recommendations" in data and "points" in data:
        raise CompareInputError(f"{path}: a sweep's output (sweep.json), not a run's; compare "
                                "takes results.json files, or folders of them")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise CompareInputError(f"{path}: schema_version {version!r} is not one poolbench "
                                f"knows (1..{SCHEMA_VERSION}); upgrade poolbench or give a "
                                "results.json it wrote")
    while version < SCHEMA_VERSION:
        data = UPGRADES[version](data)
        version += 1
        data["schema_version"] = version
    if not isinstance(data.get("strategies"), list):
        raise CompareInputError(f"{path}: no strategies in it; give a results.json written by "
                                "poolbench run")
    return data


def smallest_p(n: int, m: int) -> float:
    """The smallest two-sided p the exact rank-sum test can give n against m values: both
    complete separations, out of every split of the pooled values."""
    return min(1.0, 2 / math.comb(n + m, n))


def trials_needed(family: int, alpha: float = ALPHA) -> int:
    """Counted trials per run (the same in both) that can reach ``alpha / family``."""
    n = 2
    while smallest_p(n, n) >= alpha / family:
        n += 1
    return n


def _u_statistic(x: Any, y: Any, axis: int = -1) -> Any:
    """U of x (mid-ranks over x and y pooled), along ``axis``; vectorised for
    ``permutation_test``."""
    import numpy as np
    from scipy.stats import rankdata

    pooled = np.concatenate([x, y], axis=axis)
    ranks = rankdata(pooled, axis=axis)
    n = np.shape(x)[axis]
    return np.take(ranks, range(n), axis=axis).sum(axis=axis) - n * (n + 1) / 2


def rank_sum_p(base: Sequence[float], new: Sequence[float]) -> float:
    """Two-sided p of the Mann–Whitney test of ``base`` against ``new``: exact without ties,
    a permutation test of the same statistic (every split, or ``RESAMPLES`` of them beyond
    ``EXACT_SPLITS_MAX``) with ties."""
    from scipy.stats import mannwhitneyu, permutation_test

    pooled = list(base) + list(new)
    if len(set(pooled)) == 1:
        return 1.0  # every value the same: no order to test
    if len(set(pooled)) == len(pooled):
        return float(mannwhitneyu(base, new, alternative="two-sided", method="exact").pvalue)
    exact = math.comb(len(pooled), len(base)) <= EXACT_SPLITS_MAX
    result = permutation_test((list(base), list(new)), _u_statistic, vectorized=True,
                              permutation_type="independent", alternative="two-sided",
                              n_resamples=math.inf if exact else RESAMPLES, rng=0)
    return float(min(1.0, result.pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: sorted ascending, the i-th
    (from 0) is multiplied by (m - i), made non-decreasing, capped at 1."""
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for i, index in enumerate(sorted(range(m), key=lambda k: pvalues[k])):
        running = max(running, min(1.0, (m - i) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def spread_pct(values: Sequence[float]) -> float:
    """(max - min) / median of one run's trials, in %: how far apart its trials were."""
    median = statistics.median(values)
    return (max(values) - min(values)) / median * 100 if median else 0.0


def iqr_pct(values: Sequence[float]) -> float:
    """(Q3 - Q1) / median of one run's trials, in % (quartiles by linear interpolation
    between order statistics, numpy's default): the middle half's width."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    median = statistics.median(values)
    return (q3 - q1) / median * 100 if median else 0.0


@dataclass(frozen=True)
class Change:
    """One figure of one strategy and phase, in both runs."""

    strategy: str
    phase: str
    metric: str  # "throughput" (ops/s, higher is better) or "p50"/"p99" (µs, lower is better)
    base: float
    new: float
    change_pct: float
    p_value: float | None  # the test's own p; None: fewer than 2 counted trials in a run
    p_holm: float | None  # adjusted over every figure compared; None as p_value, or unjudgeable
    significant: bool | None  # p_holm < ALPHA; None: the trials cannot reach it
    # the change exceeds both runs' interquartile spreads
    beyond_noise: bool
    regression: bool  # significant, beyond the noise, and worse by more than the threshold
    base_trials: int = 0
    new_trials: int = 0
    spread_pct: float = 0.0  # the larger of the two runs' interquartile spreads, in %
    ranges_apart: bool = False  # every trial of one run above every trial of the other


@dataclass(frozen=True)
class RunComparison:
    base: str
    new: str
    threshold_pct: float
    changes: tuple[Change, ...]
    warnings: tuple[str, ...]
    only_in_base: tuple[str, ...]
    only_in_new: tuple[str, ...]
    method: str
    family: int = 0  # figures compared: the Holm family
    trials_needed: int = 0  # counted trials per run that can reach ALPHA / family

    @property
    def regressions(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.regression)


def _counted(phase: dict[str, Any], figure: Callable[[dict[str, Any]], float]) -> list[float]:
    return [figure(t) for t in phase.get("trials", []) if not t.get("warmup")]


def setting_differences(base: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per config key (but ``SETTINGS_NOT_COMPARED``) whose value differs, keys
    only one run has included, and per environment key."""
    lines = []
    for key in sorted((set(base["config"]) | set(new["config"])) - SETTINGS_NOT_COMPARED):
        a, b = base["config"].get(key), new["config"].get(key)
        if a != b:
            lines.append(f"config differs: {key} {a!r} -> {b!r}")
    for key in ENVIRONMENT_KEYS:
        a, b = base["environment"].get(key), new["environment"].get(key)
        if a != b:
            lines.append(f"environment differs: {key} {a!r} -> {b!r}")
    a = (base["environment"].get("server") or {}).get("server_version")
    b = (new["environment"].get("server") or {}).get("server_version")
    if a != b:
        lines.append(f"environment differs: PostgreSQL {a} -> {b}")
    return lines


def partial_warnings(data: dict[str, Any], name: str) -> list[str]:
    """What a run did not finish: marked partial, a configured strategy or phase missing, a
    phase with fewer counted trials than configured."""
    lines = []
    if data.get("partial"):
        lines.append(f"{name} is a partial run (interrupted): only what it finished is "
                     "compared")
    config = data["config"]
    done = {s["name"] for s in data["strategies"]}
    missing = [s for s in config.get("strategies") or () if not any(
        n == s or n.startswith(f"{s}@") for n in done)]
    if missing:
        lines.append(f"{name} has no results for {', '.join(missing)}")
    trials = config.get("trials")
    # a mix or scripts run one mixed phase per trial
    phases = (["mix"] if config.get("mix") or config.get("scripts")
              else ["create", "read", "update", "delete"])
    for s in data["strategies"]:
        have = {p["phase"]: p for p in s["phases"]}
        absent = [p for p in phases if p not in have]
        if absent:
            lines.append(f"{name}: {s['name']} has no {', '.join(absent)} phase")
        for p in s["phases"]:
            counted = len(_counted(p, lambda t: 0.0))
            if isinstance(trials, int) and counted < trials:
                lines.append(f"{name}: {s['name']} {p['phase']} has {counted} of {trials} "
                             "counted trials")
    return lines


def _figures(p: dict[str, Any], q: dict[str, Any]) -> list[tuple[str, float, float, list[float],
                                                                list[float], bool]]:
    """(figure, base, new, base trials, new trials, higher is better) of one phase."""
    out = [("throughput", p["throughput_ops_s"], q["throughput_ops_s"],
            _counted(p, lambda t: t["throughput_ops_s"]),
            _counted(q, lambda t: t["throughput_ops_s"]), True)]
    for metric in ("p50", "p99"):
        key = f"{metric}_us"
        out.append((metric, p["latency"][key], q["latency"][key],
                    _counted(p, lambda t, k=key: t["latency"][k]),
                    _counted(q, lambda t, k=key: t["latency"][k]), False))
    return out


def compare_runs(base: dict[str, Any], new: dict[str, Any], *, base_name: str, new_name: str,
                 threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> RunComparison:
    """Every figure of every strategy and phase both runs have, judged by ``METHOD``."""
    warnings = setting_differences(base, new)
    warnings += partial_warnings(base, base_name) + partial_warnings(new, new_name)
    by_name = {s["name"]: s for s in new["strategies"]}
    rows = []
    for s in base["strategies"]:
        other = by_name.get(s["name"])
        if other is None:
            continue
        phases = {p["phase"]: p for p in other["phases"]}
        for p in s["phases"]:
            if (q := phases.get(p["phase"])) is not None:
                rows += [(s["name"], p["phase"], *figure) for figure in _figures(p, q)]
    family = len(rows)
    needed = trials_needed(family) if family else 0
    raw = [rank_sum_p(xs, ys) if min(len(xs), len(ys)) >= 2 else None
           for *_, xs, ys, _ in rows]
    tested = [i for i, p in enumerate(raw) if p is not None]
    adjusted = dict(zip(tested, holm([raw[i] for i in tested])))
    changes = []
    for i, (strategy, phase, metric, old, now, xs, ys, higher_better) in enumerate(rows):
        pct = (now - old) / old * 100 if old else 0.0
        judgeable = raw[i] is not None and smallest_p(len(xs), len(ys)) < ALPHA / family
        significant = adjusted[i] < ALPHA if judgeable else None
        spread = max(iqr_pct(xs), iqr_pct(ys)) if xs and ys else 0.0
        apart = bool(xs and ys) and (max(xs) < min(ys) or max(ys) < min(xs))
        beyond = abs(pct) > SPREAD_FACTOR * spread
        worse = -pct if higher_better else pct
        regression = (bool(significant) and beyond and metric != "p50"
                      and worse > threshold_pct)
        changes.append(Change(strategy, phase, metric, old, now, pct, raw[i],
                              adjusted.get(i) if judgeable else None, significant, beyond,
                              regression, len(xs), len(ys), spread, apart))
    noise = [c.spread_pct for c in changes
             if c.metric == "throughput" and min(c.base_trials, c.new_trials) >= 2]
    if noise and statistics.median(noise) > threshold_pct:
        # A change inside the runs' spread is never a regression: say so rather than let
        # a pass read as "no regression".
        warnings.append(f"these runs' trials vary by {statistics.median(noise):.0f}% within a "
                        f"run (interquartile spread, median over the throughput figures): a "
                        f"change smaller than that "
                        f"cannot be told from their noise, so a real slowdown above "
                        f"--threshold {threshold_pct:g}% can pass; lengthen the trials "
                        f"(--duration, more rows) until they agree")
    if changes and not any(c.significant is not None for c in changes):
        warnings.append(f"no change can be judged: {family} figures compared need at least "
                        f"{needed} counted trials per run to reach alpha {ALPHA} / {family} "
                        f"(run both with --trials {needed})")
    names_base = [s["name"] for s in base["strategies"]]
    names_new = [s["name"] for s in new["strategies"]]
    return RunComparison(base=base_name, new=new_name, threshold_pct=threshold_pct,
                         changes=tuple(changes), warnings=tuple(warnings),
                         only_in_base=tuple(n for n in names_base if n not in names_new),
                         only_in_new=tuple(n for n in names_new if n not in names_base),
                         method=METHOD, family=family, trials_needed=needed)


def load_side(path: Path) -> list[dict[str, Any]]:
    """One side of a comparison: a results.json, or a folder whose ``results.json`` files
    (at any depth, e.g. one per ``poolbench run --out``) are that side's runs."""
    if path.is_dir():
        found = sorted(path.rglob("results.json"))
        if not found:
            raise CompareInputError(f"{path}: no results.json in this folder or below; give "
                                    "a results.json or a folder of runs' report folders")
        return [load_results(f) for f in found]
    return [load_results(path)]


def _run_figure(phase: dict[str, Any], metric: str) -> float:
    """One run's figure: the median of its counted trials (the phase's own figure when it
    kept no trials)."""
    key = "throughput_ops_s" if metric == "throughput" else f"{metric}_us"
    values = _counted(phase, (lambda t: t[key]) if metric == "throughput"
                      else (lambda t: t["latency"][key]))
    if values:
        return statistics.median(values)
    return phase[key] if metric == "throughput" else phase["latency"][key]


def welch_log_p(base: Sequence[float], new: Sequence[float]) -> float:
    """Two-sided p of Welch's t-test on the logarithms; 1.0 when neither side varies and
    they are equal, 0.0 when neither varies and they differ."""
    from scipy.stats import ttest_ind

    x = [math.log(v) for v in base]
    y = [math.log(v) for v in new]
    if len(set(x)) == 1 and len(set(y)) == 1:
        return 1.0 if x[0] == y[0] else 0.0
    return float(ttest_ind(x, y, equal_var=False).pvalue)


def compare_sides(bases: Sequence[dict[str, Any]], news: Sequence[dict[str, Any]], *,
                  base_name: str, new_name: str,
                  threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> RunComparison:
    """One run against one: ``compare_runs``. Two or more on each side: ``METHOD_RUNS``
    over the figures every run of both sides has."""
    if len(bases) == 1 and len(news) == 1:
        return compare_runs(bases[0], news[0], base_name=base_name, new_name=new_name,
                            threshold_pct=threshold_pct)
    if min(len(bases), len(news)) < 2:
        raise CompareInputError(f"{len(bases)} run(s) against {len(news)}: give one run on "
                                "each side, or two or more on each (the run as the unit)")
    warnings: list[str] = []
    for side, runs in ((base_name, bases), (new_name, news)):
        for i, other in enumerate(runs[1:], start=2):
            warnings += [f"{side}: run {i} vs run 1: {line}"
                         for line in setting_differences(runs[0], other)
                         if not line.startswith("environment differs: host")]
        for i, data in enumerate(runs, start=1):
            warnings += partial_warnings(data, f"{side} run {i}")
    warnings += setting_differences(bases[0], news[0])

    def phases_of(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(s["name"], p["phase"]): p for s in data["strategies"] for p in s["phases"]}

    base_phases = [phases_of(d) for d in bases]
    new_phases = [phases_of(d) for d in news]
    keys = [k for k in base_phases[0]
            if all(k in found for found in (*base_phases, *new_phases))]
    rows = []
    for key in keys:
        for metric in ("throughput", "p50", "p99"):
            xs = [_run_figure(found[key], metric) for found in base_phases]
            ys = [_run_figure(found[key], metric) for found in new_phases]
            rows.append((*key, metric, xs, ys))
    raw = [welch_log_p(xs, ys) if min(xs + ys) > 0 else None for *_, xs, ys in rows]
    tested = [i for i, p in enumerate(raw) if p is not None]
    adjusted = dict(zip(tested, holm([raw[i] for i in tested])))
    changes = []
    for i, (strategy, phase, metric, xs, ys) in enumerate(rows):
        old = math.exp(statistics.fmean(math.log(v) for v in xs)) if raw[i] is not None else 0.0
        now = math.exp(statistics.fmean(math.log(v) for v in ys)) if raw[i] is not None else 0.0
        pct = (now - old) / old * 100 if old else 0.0
        significant = adjusted[i] < ALPHA if raw[i] is not None else None
        worse = -pct if metric == "throughput" else pct
        spread = max(spread_pct(xs), spread_pct(ys))
        apart = max(xs) < min(ys) or max(ys) < min(xs)
        changes.append(Change(strategy, phase, metric, old, now, pct, raw[i],
                              adjusted.get(i), significant, True,
                              bool(significant) and metric != "p50" and worse > threshold_pct,
                              len(xs), len(ys), spread, apart))
    names_base = list(dict.fromkeys(s["name"] for d in bases for s in d["strategies"]))
    names_new = list(dict.fromkeys(s["name"] for d in news for s in d["strategies"]))
    return RunComparison(base=base_name, new=new_name, threshold_pct=threshold_pct,
                         changes=tuple(changes), warnings=tuple(warnings),
                         only_in_base=tuple(n for n in names_base if n not in names_new),
                         only_in_new=tuple(n for n in names_new if n not in names_base),
                         method=METHOD_RUNS, family=len(rows), trials_needed=0)

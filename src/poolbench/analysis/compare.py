"""``poolbench compare BASE.json NEW.json``: what changed between two runs, and whether the
change is more than the noise.

Method: per strategy and phase, the counted trials' throughputs (and their p99
latencies) of the two runs are compared with the Mann–Whitney U test (two-sided,
exact for small samples; scipy), at ``ALPHA``. It needs at least ``MIN_TRIALS``
counted trials per run to be able to reach ALPHA at all (3 against 3 cannot go
below p = 0.1); with fewer, the change is shown and significance is "cannot be
judged". A gate fails (exit 1) when a significant throughput drop or p99 rise
exceeds ``--threshold`` percent. Result files of every schema version poolbench
has written are read, upgraded step by step (as asv does).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poolbench.errors import ConfigError
from poolbench.results import SCHEMA_VERSION

ALPHA = 0.05
MIN_TRIALS = 4  # per run: 4 against 4 can reach p = 0.029 (two-sided, exact)
# Settings whose difference makes two runs measure different things.
CONFIG_KEYS = ("strategies", "rows", "workers", "pool_min", "pool_max", "warmup", "trials",
               "duration_s", "rate", "processes", "via", "pooler_size", "table")
ENVIRONMENT_KEYS = ("host", "cpu_count", "poolbench", "python", "machine")


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


UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}


def load_results(path: Path) -> dict[str, Any]:
    """A results.json as the current schema, or CompareInputError naming the file and why."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompareInputError(f"cannot read {path}: {type(exc).__name__}: "
                                f"{getattr(exc, 'strerror', None) or exc}; give a results.json "
                                "written by poolbench run") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
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


@dataclass(frozen=True)
class Change:
    """One figure of one strategy and phase, in both runs."""

    strategy: str
    phase: str
    metric: str  # "throughput" (ops/s, higher is better) or "p50"/"p99" (µs, lower is better)
    base: float
    new: float
    change_pct: float
    p_value: float | None  # None: too few trials to judge
    significant: bool | None
    regression: bool  # significant and worse by more than the threshold


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

    @property
    def regressions(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.regression)


def _counted(phase: dict[str, Any], figure: Callable[[dict[str, Any]], float]) -> list[float]:
    return [figure(t) for t in phase.get("trials", []) if not t.get("warmup")]


def _test(base: list[float], new: list[float]) -> float | None:
    if min(len(base), len(new)) < MIN_TRIALS:
        return None
    from scipy.stats import mannwhitneyu

    if len(set(base) | set(new)) == 1:
        return 1.0  # identical samples: no difference to find
    return float(mannwhitneyu(base, new, alternative="two-sided").pvalue)


def compare_runs(base: dict[str, Any], new: dict[str, Any], *, base_name: str, new_name: str,
                 threshold_pct: float = 5.0) -> RunComparison:
    warnings = []
    for key in ENVIRONMENT_KEYS:
        a, b = base["environment"].get(key), new["environment"].get(key)
        if a != b:
            warnings.append(f"environment differs: {key} {a!r} -> {b!r}")
    a = base["environment"].get("server", {}).get("server_version")
    b = new["environment"].get("server", {}).get("server_version")
    if a != b:
        warnings.append(f"environment differs: PostgreSQL {a} -> {b}")
    for key in CONFIG_KEYS:
        if base["config"].get(key) != new["config"].get(key):
            warnings.append(f"config differs: {key} {base['config'].get(key)!r} -> "
                            f"{new['config'].get(key)!r}")
    by_name = {s["name"]: s for s in new["strategies"]}
    changes: list[Change] = []
    for s in base["strategies"]:
        other = by_name.get(s["name"])
        if other is None:
            continue
        phases = {p["phase"]: p for p in other["phases"]}
        for p in s["phases"]:
            q = phases.get(p["phase"])
            if q is None:
                continue
            figures = (("throughput", p["throughput_ops_s"], q["throughput_ops_s"],
                        lambda t: t["throughput_ops_s"], True),
                       ("p50", p["latency"]["p50_us"], q["latency"]["p50_us"],
                        lambda t: t["latency"]["p50_us"], False),
                       ("p99", p["latency"]["p99_us"], q["latency"]["p99_us"],
                        lambda t: t["latency"]["p99_us"], False))
            for metric, old, now, per_trial, higher_better in figures:
                pct = (now - old) / old * 100 if old else 0.0
                pvalue = _test(_counted(p, per_trial), _counted(q, per_trial))
                significant = None if pvalue is None else pvalue < ALPHA
                worse = -pct if higher_better else pct
                regression = bool(significant) and metric != "p50" and worse > threshold_pct
                changes.append(Change(s["name"], p["phase"], metric, old, now, pct, pvalue,
                                      significant, regression))
    names_base = [s["name"] for s in base["strategies"]]
    names_new = [s["name"] for s in new["strategies"]]
    method = (f"Mann–Whitney U (two-sided, exact) over the counted trials' figures, "
              f"alpha {ALPHA}; needs at least {MIN_TRIALS} trials per run, else significance "
              "cannot be judged")
    return RunComparison(base=base_name, new=new_name, threshold_pct=threshold_pct,
                         changes=tuple(changes), warnings=tuple(warnings),
                         only_in_base=tuple(n for n in names_base if n not in names_new),
                         only_in_new=tuple(n for n in names_new if n not in names_base),
                         method=method)

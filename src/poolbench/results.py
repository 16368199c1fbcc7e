"""The one result model every view reads, and its versioned JSON form.

Built once from measurements by pure functions; console, chart, JSON and CSV
exporters only read these frozen dataclasses and never compute a statistic.
``results.json`` keeps the raw figures (per-trial seconds, encoded HDR
histograms) from which every printed number can be recomputed.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from poolbench.crosscheck import CrossCheck
from poolbench.metrics import (
    LatencySummary,
    PhaseMeasurement,
    encode_histogram,
    median,
    merge_histograms,
)
from poolbench.runner import StrategyMeasurement

if TYPE_CHECKING:
    from poolbench.calibrate import Calibration
from poolbench.workload import PHASES

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class TrialResult:
    """One phase of one trial (warm-up trials are kept, flagged, and never aggregated)."""

    trial: int
    warmup: bool
    elapsed_s: float
    ops: int
    throughput_ops_s: float
    errors: dict[str, int]
    latency: LatencySummary
    histogram_latency_us: str  # base64 HDR histogram; decode with metrics.decode_histogram


@dataclass(frozen=True)
class PhaseResult:
    """One phase over the counted trials: median/min/max seconds, merged latencies.

    ``throughput_ops_s`` is the median of the per-trial throughputs (ops / seconds).
    ``acquire`` is the wait for a pooled connection, or the connect for ``none``;
    ``execute`` is the statement alone. With ``--rate``, ``latency`` counts from
    each operation's actual start and ``scheduled`` from the time it was due
    (coordinated omission shows as the gap between the two); otherwise
    ``scheduled`` is None. ``held_too_long`` counts connections kept out of the
    pool longer than ``--acquire-timeout`` (leak detection, as HikariCP's).
    """

    phase: str
    trials: tuple[TrialResult, ...]
    median_s: float
    min_s: float
    max_s: float
    ops: int
    throughput_ops_s: float
    errors: dict[str, int]
    latency: LatencySummary
    acquire: LatencySummary
    execute: LatencySummary
    histogram_latency_us: str
    histogram_acquire_us: str
    histogram_execute_us: str
    scheduled: LatencySummary | None = None
    histogram_scheduled_us: str | None = None
    held_too_long: int = 0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class StrategyResult:
    name: str
    pooled: bool
    is_async: bool
    per_operation: str
    open_s: float
    phases: tuple[PhaseResult, ...]
    stats: dict[str, int]
    leftover_rows_deleted: int  # own rows the end-of-strategy sweep had to delete
    server: CrossCheck | None = None  # the server's own counts over this strategy

    @property
    def held_too_long(self) -> int:
        return sum(p.held_too_long for p in self.phases)

    @property
    def total_median_s(self) -> float:
        return sum(p.median_s for p in self.phases)

    @property
    def error_count(self) -> int:
        return sum(p.error_count for p in self.phases)

    def phase(self, name: str) -> PhaseResult:
        return next(p for p in self.phases if p.phase == name)


@dataclass(frozen=True)
class Comparison:
    """The seed's headline: first no-pool strategy vs the fastest pooled one (sum of medians)."""

    no_pool: str
    no_pool_s: float
    pooled: str
    pooled_s: float
    gain_pct: float


@dataclass(frozen=True)
class Verification:
    """End-of-run data check: none of the run's rows left, every other row unchanged."""

    own_rows_left: int
    other_rows_before: int
    other_rows_after: int
    other_rows_digest_before: str
    other_rows_digest_after: str

    @property
    def ok(self) -> bool:
        return (self.own_rows_left == 0 and self.other_rows_before == self.other_rows_after
                and self.other_rows_digest_before == self.other_rows_digest_after)


@dataclass(frozen=True)
class RunResults:
    schema_version: int
    run_tag: str
    partial: bool
    started_at: str
    finished_at: str
    config: dict[str, object]
    environment: dict[str, object]
    strategies: tuple[StrategyResult, ...]
    comparison: Comparison | None
    verification: Verification | None
    calibration: Calibration | None = None  # pgbench on the same server (--baseline pgbench)
    harness_us_per_op: float | None = None  # poolbench's own work per operation, measured

    def to_dict(self) -> dict[str, object]:
        """JSON-ready data (the password is already masked in ``config``)."""
        data = dataclasses.asdict(self)
        for strategy, raw in zip(self.strategies, data["strategies"]):
            raw["total_median_s"] = strategy.total_median_s
            raw["error_count"] = strategy.error_count
            raw["held_too_long"] = strategy.held_too_long
            if strategy.server is not None:
                raw["server"]["ok"] = strategy.server.ok
        if self.verification is not None:
            data["verification"]["ok"] = self.verification.ok
        return data


# -- builders (pure functions of measurements) -----------------------------------


def trial_result(m: PhaseMeasurement) -> TrialResult:
    return TrialResult(trial=m.trial, warmup=m.warmup, elapsed_s=m.elapsed_s, ops=m.ops,
                       throughput_ops_s=m.ops / m.elapsed_s if m.elapsed_s > 0 else 0.0,
                       errors=m.errors, latency=LatencySummary.of(m.latency),
                       histogram_latency_us=encode_histogram(m.latency))


def phase_result(phase: str, measurements: list[PhaseMeasurement]) -> PhaseResult:
    counted = [m for m in measurements if not m.warmup]
    trials = tuple(trial_result(m) for m in measurements)
    seconds = [m.elapsed_s for m in counted]
    errors: Counter[str] = Counter()
    for m in counted:
        errors.update(m.errors)
    merged = {kind: merge_histograms([getattr(m, kind) for m in counted])
              for kind in ("latency", "acquire", "execute", "scheduled")}
    paced = merged["scheduled"].get_total_count() > 0
    return PhaseResult(
        phase=phase, trials=trials, median_s=median(seconds), min_s=min(seconds),
        max_s=max(seconds), ops=sum(m.ops for m in counted),
        throughput_ops_s=median([t.throughput_ops_s for t in trials if not t.warmup]),
        errors=dict(sorted(errors.items())),
        latency=LatencySummary.of(merged["latency"]),
        acquire=LatencySummary.of(merged["acquire"]),
        execute=LatencySummary.of(merged["execute"]),
        histogram_latency_us=encode_histogram(merged["latency"]),
        histogram_acquire_us=encode_histogram(merged["acquire"]),
        histogram_execute_us=encode_histogram(merged["execute"]),
        scheduled=LatencySummary.of(merged["scheduled"]) if paced else None,
        histogram_scheduled_us=encode_histogram(merged["scheduled"]) if paced else None,
        held_too_long=sum(m.held_too_long for m in counted))


def strategy_result(m: StrategyMeasurement, *, leftover_rows_deleted: int,
                    server: CrossCheck | None = None) -> StrategyResult:
    s = m.strategy
    # An interrupted strategy may lack counted trials for some phases: those are left out.
    phases = tuple(phase_result(p, [x for x in m.phases if x.phase == p]) for p in PHASES
                   if any(x.phase == p and not x.warmup for x in m.phases))
    return StrategyResult(name=s.name, pooled=s.pooled, is_async=s.is_async,
                          per_operation=s.per_operation, open_s=m.open_s, phases=phases,
                          stats=m.stats, leftover_rows_deleted=leftover_rows_deleted,
                          server=server)


def comparison(strategies: tuple[StrategyResult, ...]) -> Comparison | None:
    complete = [s for s in strategies if len(s.phases) == len(PHASES)]
    no_pool = next((s for s in complete if not s.pooled), None)
    pooled = [s for s in complete if s.pooled]
    if no_pool is None or not pooled:
        return None
    best = min(pooled, key=lambda s: s.total_median_s)
    gain = (no_pool.total_median_s - best.total_median_s) / no_pool.total_median_s * 100
    return Comparison(no_pool=no_pool.name, no_pool_s=no_pool.total_median_s, pooled=best.name,
                      pooled_s=best.total_median_s, gain_pct=gain)

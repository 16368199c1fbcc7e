"""``poolbench sweep``: the same run at several pool sizes (or client counts), a USL model per
strategy, and a recommendation with its reason.

A point is one normal run (same server, same checks, same safety). Its throughput is
the run's successful operations over the summed phase times; its latency, acquire wait
and statement percentiles come from the histograms of every phase merged.
Recommendation: the smallest pool size whose throughput is at least ``GOOD_ENOUGH`` of
the best measured, and with ``--p99-slo`` whose p99 meets it. Beside it, HikariCP's rule
of thumb, ``connections = cores × 2 + effective spindles``, labelled as a rule of thumb.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from poolbench.analysis.usl import UslModel, fit_usl
from poolbench.measure.metrics import decode_histogram, merge_histograms
from poolbench.results import ActivitySummary, Finding, LatencySummary, RunResults, StrategyResult

SWEEP_SCHEMA_VERSION = 1
GOOD_ENOUGH = 0.95
SPINDLES = 1  # HikariCP's effective spindle count for an SSD-backed server (an assumption)


@dataclass(frozen=True)
class SweepPoint:
    strategy: str
    pool_size: int
    workers: int
    throughput_ops_s: float
    latency: LatencySummary
    acquire: LatencySummary
    execute: LatencySummary
    errors: int
    server_ok: bool | None
    run_tag: str
    active_max: int | None = None  # most active backends sampled (None: sampler off)
    # The server's samples over the point: median active backends, what they waited on
    # (shares of active samples by wait_event_type, CPU = none), the idle-in-transaction
    # share (all None with the sampler off).
    active_median: float | None = None
    wait_shares: dict[str, float] | None = None
    idle_in_transaction_share: float | None = None


@dataclass(frozen=True)
class Recommendation:
    strategy: str
    pool_size: int | None
    reason: str
    rule_of_thumb: int | None
    rule_of_thumb_note: str
    capacity_note: str | None = None


@dataclass(frozen=True)
class SweepResults:
    schema_version: int
    partial: bool
    axis: str  # "pool_size" or "workers": what the model's N is
    config: dict[str, object]
    environment: dict[str, object]
    points: tuple[SweepPoint, ...]
    models: tuple[UslModel, ...]
    recommendations: tuple[Recommendation, ...]
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def point_of(result: RunResults, strategy: StrategyResult, *, pool_size: int,
             workers: int) -> SweepPoint:
    """One strategy of one run, summed over its phases (a mix: its mixed phase)."""
    phases = [p for p in strategy.phases if p.phase == "mix"] or list(strategy.phases)
    ops = sum(p.ops for p in phases)
    seconds = sum(p.median_s for p in phases)
    merged = {kind: LatencySummary.of(merge_histograms(
        [decode_histogram(getattr(p, f"histogram_{kind}_us")) for p in phases]))
        for kind in ("latency", "acquire", "execute")}
    return SweepPoint(strategy=strategy.name, pool_size=pool_size, workers=workers,
                      throughput_ops_s=ops / seconds if seconds else 0.0, errors=
                      strategy.error_count, server_ok=strategy.server.ok if strategy.server
                      else None, run_tag=result.run_tag,
                      **_samples(strategy.activity), **merged)


def _samples(activity: ActivitySummary | None) -> dict[str, object]:
    if activity is None:
        return {}
    return {"active_max": activity.active_max, "active_median": activity.active_median,
            "wait_shares": dict(activity.wait_shares),
            "idle_in_transaction_share": activity.idle_in_transaction_share}


def models(points: tuple[SweepPoint, ...], axis: str) -> tuple[UslModel, ...]:
    found = []
    for name in dict.fromkeys(p.strategy for p in points):
        mine = [p for p in points if p.strategy == name]
        found.append(fit_usl(name, [getattr(p, axis) for p in mine],
                             [p.throughput_ops_s for p in mine]))
    return tuple(found)


def rule_of_thumb(server_cores: int | None) -> tuple[int | None, str]:
    if server_cores is None:
        return None, ("HikariCP's rule of thumb (cores × 2 + effective spindles) needs the "
                      "server's core count, which poolbench knows only for a local server")
    return server_cores * 2 + SPINDLES, (f"rule of thumb (HikariCP): {server_cores} server "
                                         f"cores × 2 + {SPINDLES} spindle = "
                                         f"{server_cores * 2 + SPINDLES}")


def recommend(points: tuple[SweepPoint, ...], *, axis: str, p99_slo_ms: float | None,
              server_cores: int | None, app_instances: int | None = None,
              max_connections: int | None = None) -> tuple[Recommendation, ...]:
    """Per strategy: the smallest N within GOOD_ENOUGH of the best (and within the SLO)."""
    thumb, thumb_note = rule_of_thumb(server_cores)
    found = []
    for name in dict.fromkeys(p.strategy for p in points):
        mine = sorted((p for p in points if p.strategy == name and not p.errors),
                      key=lambda p: getattr(p, axis))
        if not mine:
            found.append(Recommendation(name, None, "every point had failed operations: no "
                                        "size can be recommended", thumb, thumb_note))
            continue
        best = max(mine, key=lambda p: p.throughput_ops_s)
        fit = [p for p in mine if p.throughput_ops_s >= GOOD_ENOUGH * best.throughput_ops_s
               and (p99_slo_ms is None or p.latency.p99_us <= p99_slo_ms * 1000)]
        if not fit:
            found.append(Recommendation(
                name, None, f"no {axis.replace('_', ' ')} met the p99 SLO of {p99_slo_ms} ms "
                "within 95% of the best throughput", thumb, thumb_note))
            continue
        pick = fit[0]
        n = getattr(pick, axis)
        reason = (f"{n}: {pick.throughput_ops_s / best.throughput_ops_s:.0%} of the best "
                  f"throughput ({getattr(best, axis)}), p99 {pick.latency.p99_us / 1000:.1f} ms")
        largest = mine[-1]
        if largest is not pick and pick.latency.p99_us:
            growth = largest.latency.p99_us / pick.latency.p99_us
            gain = (largest.throughput_ops_s / pick.throughput_ops_s - 1) * 100
            at = getattr(largest, axis)
            if gain >= 0 and growth >= 1.05:
                reason += f"; above {n}, p99 grows {growth:.1f}× for {gain:+.0f}% throughput " \
                          f"(at {at})"
            else:  # nothing bought above it: say what the largest size did instead
                reason += (f"; at {at}, throughput {gain:+.0f}% and p99 "
                           f"{largest.latency.p99_us / 1000:.1f} ms ({growth:.1f}×)")
        capacity = None
        if app_instances and max_connections and axis == "pool_size":
            total = app_instances * n
            capacity = (f"{app_instances} app instances × {n} = {total} connections "
                        + (f"fit the server's {max_connections} usable connections"
                           if total <= max_connections else
                           f"exceed the server's {max_connections} usable connections: put an "
                           "external pooler (PgBouncer) between them, or shrink the pools"))
        found.append(Recommendation(name, n, reason, thumb, thumb_note, capacity))
    return tuple(found)

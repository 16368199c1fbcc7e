"""``poolbench sweep``: the same run at several pool sizes (or client counts), a USL model per
curve, and a recommendation with its reason.

A point is one normal run (same server, same checks, same safety). Its throughput is
its counted trials' successful operations over the same trials' seconds (phases
summed), so ``--trials N`` averages trials and never adds them up; each trial's own
figure is kept, and the model is fitted to those. Its latency, acquire wait and
statement percentiles come from the histograms of every phase merged.
A curve is one strategy's points along the swept N; in a grid (lists of pool sizes and
of workers) one curve per client count, each with its own model and recommendation.
A strategy without a pool in a pool-size sweep has no size to fit or recommend: its
points are reference lines. With ``--rtt 0,1,5`` the RTT is one more axis: each point runs
at one distance (0: direct, no relay), and each RTT's points are curves of their own, so a
curve is (strategy, client count, RTT); its recommendation's reason names the time an
operation holds a connection there and, by Little's law, the connections it keeps busy.
Recommendation: the smallest N whose throughput is at least ``GOOD_ENOUGH`` of the
best measured on its curve, and with ``--p99-slo`` whose p99 meets it. Beside it,
HikariCP's rule of thumb, ``connections = cores × 2 + effective spindles``, labelled as
a rule of thumb.
How sure: each point's throughput carries the median of its trials with a percentile
bootstrap 95% interval, and each recommendation the range of sizes the same rule picks
on the medians of resampled trials (:mod:`poolbench.analysis.intervals`, Efron &
Tibshirani 1993): "8, 95% interval 4-8". One trial per point gives no interval: sweep
with ``--trials`` 3 or more.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from poolbench.analysis.intervals import (
    Interval,
    SizeInterval,
    median_interval,
    recommended_size_interval,
)
from poolbench.analysis.usl import UslModel, fit_usl
from poolbench.measure.metrics import decode_histogram, merge_histograms
from poolbench.results import ActivitySummary, Finding, LatencySummary, RunResults, StrategyResult

SWEEP_SCHEMA_VERSION = 5  # 3: throughput_interval per point, interval per recommendation;
# 4: each point's trial_p99s_us and p99_interval; 5: rtt_ms (and the measured rtt) per point,
# rtt_ms per model and recommendation
GOOD_ENOUGH = 0.95
SPINDLES = 1  # HikariCP's effective spindle count for an SSD-backed server (an assumption)


@dataclass(frozen=True)
class SweepPoint:
    strategy: str
    pool_size: int  # 0: the strategy has no pool
    workers: int
    throughput_ops_s: float  # counted trials' operations over the same trials' seconds
    latency: LatencySummary
    acquire: LatencySummary
    execute: LatencySummary
    errors: int
    server_ok: bool | None
    run_tag: str
    trial_throughputs_ops_s: tuple[float, ...] = ()  # each counted trial's own figure
    active_max: int | None = None  # most active backends sampled (None: sampler off)
    # The server's samples over the point: median active backends, what they waited on
    # (shares of active samples by wait_event_type, CPU = none), the idle-in-transaction
    # share (all None with the sampler off).
    active_median: float | None = None
    wait_shares: dict[str, float] | None = None
    idle_in_transaction_share: float | None = None
    # Every per-run finding of the point's run, for its strategy (lock contention, churn...)
    findings: tuple[Finding, ...] = ()
    # The median of the trials' throughputs and its bootstrap 95% interval (None: no trials)
    throughput_interval: Interval | None = None
    # Each counted trial's p99 (µs; its phases' histograms merged), in the order of
    # trial_throughputs_ops_s, and their median's bootstrap 95% interval
    trial_p99s_us: tuple[float, ...] = ()
    p99_interval: Interval | None = None
    # --rtt's axis: the round trip asked of the point's runs (0: direct, no relay; None:
    # a sweep without the axis) and the median of what their relay check measured
    # (``rtt.measured_ms``: the SELECT 1 round trip through the relay, loopback included)
    rtt_ms: float | None = None
    rtt_measured_ms: float | None = None
    # Of its counted trials, how many MSER-5 could judge (100 or more 0.1-s intervals) and
    # how many of those settled (every judged phase did): see measure/steady.py
    trials_judged: int = 0
    trials_settled: int = 0


@dataclass(frozen=True)
class Recommendation:
    strategy: str
    pool_size: int | None  # the recommended N (a client count in a workers sweep)
    reason: str
    rule_of_thumb: int | None
    rule_of_thumb_note: str
    capacity_note: str | None = None
    workers: int | None = None  # the client count it applies to (None: a workers sweep)
    # The sizes the same rule picks on resampled trials' medians (None: no size measured)
    interval: SizeInterval | None = None
    rtt_ms: float | None = None  # the RTT its curve ran at (None: a sweep without --rtt)


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
        data = dataclasses.asdict(self)
        data["references"] = list(dict.fromkeys(
            p.strategy for p in references(self.points, self.axis)))
        return data


def point_of(result: RunResults, strategy: StrategyResult, *, pool_size: int,
             workers: int, rtt_ms: float | None = None) -> SweepPoint:
    """One strategy of one run, summed over its phases (a mix: its mixed phase): per
    counted trial, its phases' operations over their seconds."""
    return point_of_runs(((result, strategy),), pool_size=pool_size, workers=workers,
                         rtt_ms=rtt_ms)


def point_of_runs(runs: Sequence[tuple[RunResults, StrategyResult]], *, pool_size: int,
                  workers: int, rtt_ms: float | None = None) -> SweepPoint:
    """One point from the runs made of it (a sweep's rounds: one run per round), each run's
    counted trials its own: the point's throughput is every counted trial's operations
    over their seconds, its percentiles every phase's histograms merged, its errors summed;
    it agrees with the server when every run did. Run tags are joined with commas."""
    trials: list[tuple[int, float]] = []
    trial_p99s: list[float] = []
    judged = settled = 0
    phases = []
    for _, strategy in runs:
        mine = [p for p in strategy.phases if p.phase == "mix"] or list(strategy.phases)
        phases += mine
        per_trial: dict[int, tuple[int, float]] = {}
        histograms: dict[int, list[str]] = {}
        verdicts: dict[int, list[bool]] = {}
        for phase in mine:
            for trial in phase.trials:
                if not trial.warmup and trial.steady is not None \
                        and trial.steady.settled is not None:
                    verdicts.setdefault(trial.trial, []).append(trial.steady.settled)
                if not trial.warmup:
                    ops, seconds = per_trial.get(trial.trial, (0, 0.0))
                    per_trial[trial.trial] = (ops + trial.ops, seconds + trial.elapsed_s)
                    histograms.setdefault(trial.trial, []).append(trial.histogram_latency_us)
        trials += per_trial.values()
        judged += len(verdicts)
        settled += sum(all(v) for v in verdicts.values())
        trial_p99s += [float(LatencySummary.of(merge_histograms(
            [decode_histogram(h) for h in histograms[t]])).p99_us) for t in per_trial]
    ops = sum(o for o, _ in trials)
    seconds = sum(s for _, s in trials)
    merged = {kind: LatencySummary.of(merge_histograms(
        [decode_histogram(getattr(p, f"histogram_{kind}_us")) for p in phases]))
        for kind in ("latency", "acquire", "execute")}
    per_trial_ops_s = tuple(o / s if s else 0.0 for o, s in trials)
    verdicts = [s.server.ok for _, s in runs if s.server]
    findings: dict[tuple[str, str], Finding] = {}
    for result, strategy in runs:
        for f in result.findings:
            if f.strategy == strategy.name:
                findings.setdefault((f.rule, f.strategy), f)
    name = runs[0][1].name
    checked = [r.rtt.measured_ms for r, _ in runs if r.rtt is not None]
    return SweepPoint(strategy=name, pool_size=pool_size, workers=workers,
                      throughput_ops_s=ops / seconds if seconds else 0.0,
                      trial_throughputs_ops_s=per_trial_ops_s,
                      throughput_interval=median_interval(per_trial_ops_s)
                      if per_trial_ops_s else None,
                      trial_p99s_us=tuple(trial_p99s),
                      p99_interval=median_interval(trial_p99s) if trial_p99s else None,
                      trials_judged=judged, trials_settled=settled,
                      errors=sum(s.error_count for _, s in runs),
                      server_ok=all(verdicts) if verdicts else None,
                      run_tag=",".join(r.run_tag for r, _ in runs),
                      findings=tuple(findings.values()), rtt_ms=rtt_ms,
                      rtt_measured_ms=statistics.median(checked) if checked else None,
                      **_samples([s.activity for _, s in runs if s.activity is not None]),
                      **merged)


def _samples(activity: Sequence[ActivitySummary]) -> dict[str, object]:
    """The server's samples over a point's runs: the most active backends of any, the
    median of their medians, and the mean of their shares (wait shares over the runs that
    sampled a backend active, so they still add up to 1)."""
    if not activity:
        return {}
    kinds = sorted({k for a in activity for k in a.wait_shares})
    waited = [a for a in activity if a.wait_shares]
    idle = [a.idle_in_transaction_share for a in activity
            if a.idle_in_transaction_share is not None]
    return {"active_max": max(a.active_max for a in activity),
            "active_median": statistics.median(a.active_median for a in activity),
            "wait_shares": {k: sum(a.wait_shares.get(k, 0.0) for a in waited) / len(waited)
                            for k in kinds},
            "idle_in_transaction_share": sum(idle) / len(idle) if idle else None}


def is_reference(point: SweepPoint, axis: str) -> bool:
    """A no-pool point of a pool-size sweep: a reference line, not a pool size of 0."""
    return axis == "pool_size" and point.pool_size == 0


def references(points: tuple[SweepPoint, ...], axis: str) -> tuple[SweepPoint, ...]:
    return tuple(p for p in points if is_reference(p, axis))


Curve = tuple[str, int | None, float | None]  # (strategy, client count, RTT)


def curves(points: tuple[SweepPoint, ...], axis: str
           ) -> dict[Curve, tuple[SweepPoint, ...]]:
    """The sweep's curves by (strategy, client count, RTT), their points in order of N. In
    a pool-size sweep each client count is its own curve (a grid's throughput at 8 clients
    says nothing of 64's); in a workers sweep the key's client count is None. Each RTT of
    ``--rtt``'s axis is its own curve too (None: a sweep without the axis)."""
    found: dict[Curve, list[SweepPoint]] = {}
    for p in points:
        if not is_reference(p, axis):
            key = (p.strategy, p.workers if axis == "pool_size" else None, p.rtt_ms)
            found.setdefault(key, []).append(p)
    return {key: tuple(sorted(mine, key=lambda p: getattr(p, axis)))
            for key, mine in found.items()}


def models(points: tuple[SweepPoint, ...], axis: str) -> tuple[UslModel, ...]:
    """One USL model per curve, fitted to each trial's throughput (a point without
    per-trial figures counts once)."""
    found = []
    for (name, clients, rtt), mine in curves(points, axis).items():
        figures = [(getattr(p, axis), x) for p in mine
                   for x in p.trial_throughputs_ops_s or (p.throughput_ops_s,)]
        found.append(dataclasses.replace(fit_usl(name, [n for n, _ in figures],
                                                 [x for _, x in figures]),
                                         workers=clients, rtt_ms=rtt))
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
    """Per curve: the smallest N within GOOD_ENOUGH of the best (and within the SLO);
    references get none."""
    thumb, thumb_note = rule_of_thumb(server_cores)
    larger = "larger sizes" if axis == "pool_size" else "more clients"
    found = []
    for (name, clients, rtt), curve in curves(points, axis).items():
        mine = [p for p in curve if not p.errors]
        if not mine:
            found.append(Recommendation(name, None, "every point had failed operations: no "
                                        "size can be recommended", thumb, thumb_note,
                                        workers=clients, rtt_ms=rtt))
            continue
        best = max(mine, key=lambda p: p.throughput_ops_s)
        fit = [p for p in mine if p.throughput_ops_s >= GOOD_ENOUGH * best.throughput_ops_s
               and (p99_slo_ms is None or p.latency.p99_us <= p99_slo_ms * 1000)]
        if not fit:
            found.append(Recommendation(
                name, None, f"no {axis.replace('_', ' ')} met the p99 SLO of {p99_slo_ms} ms "
                "within 95% of the best throughput", thumb, thumb_note, workers=clients,
                rtt_ms=rtt))
            continue
        pick = fit[0]
        n = getattr(pick, axis)
        interval = size_interval(mine, axis, p99_slo_ms)
        reason = (f"{n}{interval_text(n, interval)}: "
                  f"{pick.throughput_ops_s / best.throughput_ops_s:.0%} of the best "
                  f"throughput ({getattr(best, axis)}), p99 {pick.latency.p99_us / 1000:.1f} ms")
        largest = mine[-1]
        if largest is pick and best is pick and len(mine) > 1:
            # no knee measured: throughput still grew at the largest N tried
            reason += f"; still scaling at {n}: try {larger}"
        elif largest is not pick and pick.latency.p99_us:
            growth = largest.latency.p99_us / pick.latency.p99_us
            gain = (largest.throughput_ops_s / pick.throughput_ops_s - 1) * 100
            at = getattr(largest, axis)
            if gain >= 0 and growth >= 1.05:
                reason += f"; above {n}, p99 grows {growth:.1f}× for {gain:+.0f}% throughput " \
                          f"(at {at})"
            else:  # nothing bought above it: say what the largest size did instead
                reason += (f"; at {at}, throughput {gain:+.0f}% and p99 "
                           f"{largest.latency.p99_us / 1000:.1f} ms ({growth:.1f}×)")
        if rtt is not None:
            reason += held_text(pick)
        capacity = None
        if app_instances and max_connections and axis == "pool_size":
            total = app_instances * n
            capacity = (f"{app_instances} app instances × {n} = {total} connections "
                        + (f"fit the server's {max_connections} usable connections"
                           if total <= max_connections else
                           f"exceed the server's {max_connections} usable connections: put an "
                           "external pooler (PgBouncer) between them, or shrink the pools"))
        found.append(Recommendation(name, n, reason, thumb, thumb_note, capacity, clients,
                                    interval, rtt))
    return tuple(found)


def held_ms(point: SweepPoint) -> float:
    """How long an operation of ``point`` holds a connection (means, ms): from getting it to
    giving it back, latency - acquire; a strategy without a pool holds its own connection
    for the whole operation, its connect included."""
    held = point.latency.mean_us - (point.acquire.mean_us if point.pool_size else 0.0)
    return held / 1000


def held_text(point: SweepPoint) -> str:
    """The reason's distance clause: at the point's RTT, the time an operation holds its
    connection (from its measured latency, acquire and statement means) and the
    connections its throughput keeps busy by Little's law (busy = throughput × held)."""
    held = held_ms(point)
    how = (f"latency {point.latency.mean_us / 1000:.2f} - acquire "
           f"{point.acquire.mean_us / 1000:.2f} ms" if point.pool_size else
           f"the whole operation, its connect {point.acquire.mean_us / 1000:.2f} ms included")
    measured = ("" if point.rtt_measured_ms is None
                else f" (measured {point.rtt_measured_ms:.2f} ms)")
    direct = " (direct)" if point.rtt_ms == 0 else ""
    return (f"; at {point.rtt_ms:g} ms RTT{direct}{measured} each operation holds its connection "
            f"{held:.2f} ms ({how}, means; statement {point.execute.mean_us / 1000:.2f} ms), "
            f"so {point.throughput_ops_s:,.0f} ops/s keep "
            f"{point.throughput_ops_s * held / 1000:.1f} connections busy (Little's law)")


def size_interval(points: list[SweepPoint], axis: str,
                  p99_slo_ms: float | None) -> SizeInterval:
    """The recommendation's interval over one curve's error-free points: each point's
    trials resampled, the rule applied to their medians; with an SLO a trial's throughput
    and p99 are drawn together (a point without per-trial p99s repeats its own p99)."""
    trials = {getattr(p, axis): p.trial_throughputs_ops_s or (p.throughput_ops_s,)
              for p in points}
    p99s = ({getattr(p, axis): p.trial_p99s_us
             if len(p.trial_p99s_us) == len(trials[getattr(p, axis)])
             else (p.latency.p99_us,) * len(trials[getattr(p, axis)])
             for p in points} if p99_slo_ms is not None else None)
    return recommended_size_interval(trials, good_enough=GOOD_ENOUGH, p99s_us=p99s,
                                     p99_slo_us=None if p99_slo_ms is None
                                     else p99_slo_ms * 1000)


def interval_text(n: int, interval: SizeInterval) -> str:
    """", 95% interval 4-8" (and what it means when its own pick is not ``n``); nothing
    without an interval (its note says why: the views show it)."""
    if interval.low is None or interval.high is None:
        return ""
    text = f", {interval.confidence:.0%} interval {interval.low}-{interval.high}"
    if interval.size is not None and interval.size != n:
        text += (f" (on the trials' medians the rule picks {interval.size}; {n} is picked "
                 "on the trials' summed operations over their seconds)")
    return text

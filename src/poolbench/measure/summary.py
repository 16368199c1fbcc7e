"""Measurements become results: the pure functions that build the result model.

Everything printed is computed here, once: per-trial figures, medians over
counted trials, merged histograms. Exporters only read what these return.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from poolbench.measure.metrics import (
    HISTOGRAMS,
    TENTHS,
    PhaseMeasurement,
    StatementCounters,
    encode_histogram,
    fine_counts,
    median,
    merge_histograms,
    merge_seconds,
    merge_waits,
)
from poolbench.measure.runner import StrategyMeasurement
from poolbench.measure.steady import steady_state
from poolbench.results import (
    ActivitySummary,
    CrossCheck,
    LatencySummary,
    PhaseResult,
    PoolerCheck,
    Second,
    StatementFigure,
    SteadyVerdict,
    StrategyResult,
    TrialResult,
)

# The kinds of one mixed phase: the mix's (``mix:read``) and scripts' (``script:NAME``),
# summed into the whole phase, ``mix``.
KINDS = ("mix:", "script:")


def trial_result(m: PhaseMeasurement) -> TrialResult:
    return TrialResult(trial=m.trial, warmup=m.warmup, elapsed_s=m.elapsed_s, ops=m.ops,
                       throughput_ops_s=m.ops / m.elapsed_s if m.elapsed_s > 0 else 0.0,
                       errors=m.errors, latency=LatencySummary.of(m.latency),
                       histogram_latency_us=encode_histogram(m.latency),
                       timeline=timeline(m),
                       steady=None if m.warmup else steady_verdict(m))


def steady_verdict(m: PhaseMeasurement) -> SteadyVerdict:
    """MSER-5 on the trial's operations per 0.1 s, over the intervals wholly inside its
    elapsed time (the last, partial one would read as a drop)."""
    n = int(m.elapsed_s * TENTHS + 1e-9)
    series = list(m.tenths[:n])
    series += [0] * (n - len(series))
    state = steady_state(series)
    return SteadyVerdict(cut_s=round(state.cut / TENTHS, 1), settled=state.settled,
                         observations=state.observations, reason=state.reason)


def spread_pct(values: list[float]) -> float:
    """(max - min) / median, in percent: the trials' spread, as hyperfine shows min..max."""
    middle = median(values) if values else 0.0
    return round((max(values) - min(values)) / middle * 100, 1) if middle else 0.0


def timeline(m: PhaseMeasurement) -> tuple[Second, ...]:
    """The phase second by second: operations that ended in each, p50 and p99."""
    found = []
    waits = m.waits or {}
    for second, counts in (m.seconds or {}).items():
        summary = LatencySummary.of(fine_counts(counts).to_hdr())
        found.append(Second(second=second, ops=summary.count, p50_us=summary.p50_us,
                            p99_us=summary.p99_us,
                            waiting=round(waits.get(second, 0) / 1e9, 3)))
    return tuple(found)


def release_mean_us(latency: LatencySummary, acquire: LatencySummary,
                    execute: LatencySummary) -> float:
    """The mean of what follows the statement in an operation (giving the connection back,
    waiting for the interpreter): the operation's mean less its two measured parts. Each
    mean is read from a histogram at 0.1% precision, so a rest of a few µs can come out
    just below zero: it is then 0."""
    return round(max(0.0, latency.mean_us - acquire.mean_us - execute.mean_us), 1)


def phase_result(phase: str, measurements: list[PhaseMeasurement]) -> PhaseResult:
    counted = [m for m in measurements if not m.warmup]
    trials = tuple(trial_result(m) for m in measurements)
    seconds = [m.elapsed_s for m in counted]
    errors: Counter[str] = Counter()
    for m in counted:
        errors.update(m.errors)
    merged = {kind: merge_histograms([getattr(m, kind) for m in counted])
              for kind in HISTOGRAMS}
    paced = merged["scheduled"].get_total_count() > 0
    latency, acquire, execute = (LatencySummary.of(merged[kind])
                                 for kind in ("latency", "acquire", "execute"))
    return PhaseResult(
        phase=phase, trials=trials, median_s=median(seconds), min_s=min(seconds),
        max_s=max(seconds), ops=sum(m.ops for m in counted),
        throughput_ops_s=median([t.throughput_ops_s for t in trials if not t.warmup]),
        errors=dict(sorted(errors.items())),
        latency=latency, acquire=acquire, execute=execute,
        release_mean_us=release_mean_us(latency, acquire, execute),
        histogram_latency_us=encode_histogram(merged["latency"]),
        histogram_acquire_us=encode_histogram(merged["acquire"]),
        histogram_execute_us=encode_histogram(merged["execute"]),
        scheduled=LatencySummary.of(merged["scheduled"]) if paced else None,
        histogram_scheduled_us=encode_histogram(merged["scheduled"]) if paced else None,
        failed=LatencySummary.of(merged["failed"]),
        throughput_spread_pct=spread_pct([t.throughput_ops_s for t in trials if not t.warmup]),
        histogram_failed_us=encode_histogram(merged["failed"]),
        held_too_long=sum(m.held_too_long for m in counted),
        statements=statement_figures(StatementCounters.merged(m.statements for m in counted)))


def statement_figures(counters: StatementCounters | None) -> tuple[StatementFigure, ...]:
    """A script's commands as pgbench ``-r`` lists them (empty: not a script's phase). A
    ``\\set`` runs once per script run, and is not timed."""
    if counters is None:
        return ()
    figures = []
    for i, (line, command, timed) in enumerate(counters.commands):
        count = counters.count[i] if timed else counters.runs
        total_us = counters.ns[i] // 1000 if timed else None
        figures.append(StatementFigure(
            line=line, command=command, count=count, failures=counters.failed[i],
            total_us=total_us,
            mean_ms=round(counters.ns[i] / count / 1e6, 3) if timed and count else
            (0.0 if timed else None)))
    return tuple(figures)


def strategy_result(m: StrategyMeasurement, *, leftover_rows_deleted: int,
                    server: CrossCheck | None = None, route: str = "direct",
                    prepared_statements: bool = True,
                    pooler: PoolerCheck | None = None,
                    activity: ActivitySummary | None = None,
                    protocol_note: str | None = None) -> StrategyResult:
    s = m.strategy
    # An interrupted strategy may lack counted trials for some phases: those are left out.
    names = list(dict.fromkeys(x.phase for x in m.phases))
    phases = tuple(phase_result(p, [x for x in m.phases if x.phase == p]) for p in names
                   if any(x.phase == p and not x.warmup for x in m.phases))
    if any(p.startswith(KINDS) for p in names):  # a mix's kinds, or scripts
        whole = [mix_measurement([x for x in m.phases if x.trial == trial and
                                  x.phase.startswith(KINDS)])
                 for trial in dict.fromkeys(x.trial for x in m.phases)]
        if any(not x.warmup for x in whole):
            phases = (phase_result("mix", whole), *phases)
    name = s.name if route == "direct" else f"{s.name}@{route}"
    return StrategyResult(name=name, pooled=s.pooled, is_async=s.is_async,
                          per_operation=s.per_operation, open_s=m.open_s, phases=phases,
                          stats=m.stats, leftover_rows_deleted=leftover_rows_deleted,
                          server=server, route=route, prepared_statements=prepared_statements,
                          pooler=pooler, activity=activity, window_stats=m.window_stats,
                          protocol_note=protocol_note)


def mix_measurement(kinds: list[PhaseMeasurement]) -> PhaseMeasurement:
    """A mixed phase's kinds (or scripts) of one trial, merged into the whole mix (same
    clock)."""
    first = kinds[0]
    errors: Counter[str] = Counter()
    for k in kinds:
        errors.update(k.errors)
    return PhaseMeasurement(
        phase="mix", trial=first.trial, warmup=first.warmup, elapsed_s=first.elapsed_s,
        ops=sum(k.ops for k in kinds), errors=dict(sorted(errors.items())),
        held_too_long=sum(k.held_too_long for k in kinds),
        seconds=merge_seconds(k.seconds or {} for k in kinds),
        waits=merge_waits(k.waits or {} for k in kinds),
        tenths=add_series(k.tenths for k in kinds),
        **{kind: merge_histograms([getattr(k, kind) for k in kinds]) for kind in HISTOGRAMS})


def add_series(parts: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    """Series of equal intervals from the same start, added interval by interval."""
    total: list[int] = []
    for part in parts:
        total += [0] * (len(part) - len(total))
        for i, n in enumerate(part):
            total[i] += n
    return tuple(total)

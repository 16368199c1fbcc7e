"""Drives a strategy through its trials and phases, on the executor its settings ask for:
threads or an event loop in this process (:mod:`poolbench.measure.executor`), or
several processes of either (:mod:`poolbench.measure.processes`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from poolbench.config import Pace
from poolbench.db.workload import Workload
from poolbench.events import RunEvents
from poolbench.measure.cluster import ClusterExecutor, ClusterNodes
from poolbench.measure.executor import PhaseExecutor, StopFlag, in_process_executor
from poolbench.measure.metrics import PhaseMeasurement
from poolbench.measure.phase import PhaseSpec
from poolbench.measure.processes import ProcessExecutor
from poolbench.results import PHASES
from poolbench.strategies.base import Strategy, StrategySettings
from poolbench.workloads.scripted import ScriptPlan


def make_executor(cls: type[Strategy], settings: StrategySettings, *, stop: StopFlag,
                  processes: int = 1, cluster: ClusterNodes | None = None) -> PhaseExecutor:
    """The executor for a strategy: threads, an event loop, or several processes or cluster
    nodes of either."""
    if cluster is not None:
        return ClusterExecutor(cls, settings, cluster=cluster, stop=stop)
    if processes > 1:
        return ProcessExecutor(cls, settings, processes=processes, stop=stop)
    return in_process_executor(cls, settings, stop=stop)


@dataclass(frozen=True)
class StrategyMeasurement:
    """Everything measured for one strategy: open time, each phase of each trial, counters.

    ``interrupted`` is set when the stop event cut the strategy short; the phase
    that was cut is not among ``phases`` (its figures would describe part of a phase).
    """

    strategy: type[Strategy]
    open_s: float
    phases: tuple[PhaseMeasurement, ...]
    stats: dict[str, int]
    interrupted: bool = False
    # --interleave: each window's own counters (each window opens a fresh pool)
    window_stats: tuple[dict[str, int], ...] = ()


def run_strategy(cls: type[Strategy], settings: StrategySettings, *, workload: Workload,
                 rows: int, warmup: int, trials: int, events: RunEvents,
                 stop: threading.Event | None = None, pace: Pace | None = None,
                 processes: int = 1, label: str | None = None,
                 cluster: ClusterNodes | None = None,
                 window: int | None = None, mix: tuple[tuple[str, int], ...] = (),
                 mix_rows: tuple[int, ...] = (),
                 scripts: ScriptPlan | None = None) -> StrategyMeasurement:
    """Open the strategy, run warm-up then counted trials of the four phases, close it.

    ``window`` (``--interleave``, which runs strategies a counted trial at a time) runs
    only counted trial number ``window``, after ``warmup`` warm-up trials of its own: each
    window opens a fresh pool, and a fresh pool is cold. Trials are numbered in the order
    the strategy runs them, across windows. With ``mix``, a trial is one mixed phase over
    ``mix_rows`` (rows made for it), whose survivors the next trial takes on. With
    ``scripts``, a trial is one phase of script runs (``rows`` of them, or ``--duration``).

    Setting ``stop`` makes every worker finish its current operation and stop;
    the strategy then closes and returns what it measured, marked interrupted.
    """
    stop = stop or threading.Event()
    pace = pace or Pace()
    executor = make_executor(cls, settings, stop=stop, processes=processes, cluster=cluster)
    measured: list[PhaseMeasurement] = []
    label = label or cls.name  # what progress shows: the strategy, and its route if any
    # Every trial the strategy runs, in all its windows: what progress views count to.
    events.strategy_started.fire(strategy=label, trials=trials + warmup * (
        1 if window is None else trials))
    open_s = 0.0
    try:
        open_s = executor.open()
        live = list(mix_rows)
        for trial, warm in trial_plan(warmup=warmup, trials=trials, window=window):
            if scripts is not None:
                if not _run_script_trial(executor, label, workload, trial, warm, rows,
                                         pace.of_trial(warm), events, stop, measured, scripts):
                    break
            elif mix:
                if not _run_mix_trial(executor, label, workload, trial, warm, rows,
                                      pace.of_trial(warm), events, stop, measured, mix, live):
                    break
            elif not _run_trial(executor, label, workload, trial, warm, rows,
                                pace.of_trial(warm), events, stop, measured):
                break
    finally:
        executor.close()
    return StrategyMeasurement(cls, open_s, tuple(measured), executor.stats(),
                               interrupted=stop.is_set())


def trial_plan(*, warmup: int, trials: int,
               window: int | None = None) -> tuple[tuple[int, bool], ...]:
    """The trials a strategy runs, as (number, warm-up?): all of them, warm-ups first, or
    one window's warm-ups and its counted trial. A counted trial keeps its number
    (``warmup + window``) wherever it runs; a window's warm-ups are numbered after every
    counted trial, so no two trials of a strategy share a number."""
    if window is None:
        return tuple((t, t < warmup) for t in range(warmup + trials))
    first = warmup + trials + window * warmup
    return (*((first + j, True) for j in range(warmup)), (warmup + window, False))


def _run_trial(executor: PhaseExecutor, name: str, workload: Workload, trial: int,
               warmup: bool, rows: int, pace: Pace, events: RunEvents, stop: threading.Event,
               measured: list[PhaseMeasurement]) -> bool:
    """Run the four phases of one trial; False if the stop event cut it short."""
    statements = workload.statements()
    ids: tuple[int, ...] = ()
    for phase in PHASES:
        spec = PhaseSpec.of(phase, statements[phase], workload, trial, rows=rows, ids=ids,
                            pace=pace)
        events.phase_started.fire(strategy=name, trial=trial, warmup=warmup, phase=phase,
                                  total=spec.expected)
        run = executor.run_phase(spec, lambda n: events.progress.fire(advance=n))
        if stop.is_set():
            return False
        if phase == "create":
            ids = tuple(run.created)
        m = PhaseMeasurement.merge(phase=phase, trial=trial, warmup=warmup,
                                   elapsed_s=run.elapsed_s, recorders=run.recorders)
        measured.append(m)
        events.phase_finished.fire(measurement=m)
    return True


def _run_mix_trial(executor: PhaseExecutor, name: str, workload: Workload, trial: int,
                   warmup: bool, rows: int, pace: Pace, events: RunEvents,
                   stop: threading.Event, measured: list[PhaseMeasurement],
                   mix: tuple[tuple[str, int], ...], live: list[int]) -> bool:
    """One mixed phase (``rows`` operations, or ``--duration``); measured per kind."""
    statements = workload.statements()
    spec = PhaseSpec("mix", statements["read"], workload, trial,
                     count=None if pace.duration_s is not None else rows, ids=tuple(live),
                     pace=pace, mix=mix, statements=tuple(statements.values()))
    events.phase_started.fire(strategy=name, trial=trial, warmup=warmup, phase="mix",
                              total=spec.expected)
    run = executor.run_phase(spec, lambda n: events.progress.fire(advance=n))
    if stop.is_set():
        return False
    live[:] = run.created  # the rows still alive: the next trial's to touch
    # Kinds in the mix's order; creates made because no row was free are shown even when
    # the mix has none, so every operation the server counted is in a kind.
    kinds = [kind for kind, _ in mix]
    if "create" not in kinds and any(r.kind == "create" and (r.ok or r.errors)
                                     for r in run.recorders):
        kinds.append("create")
    for kind in kinds:
        m = PhaseMeasurement.merge(phase=f"mix:{kind}", trial=trial, warmup=warmup,
                                   elapsed_s=run.elapsed_s,
                                   recorders=[r for r in run.recorders if r.kind == kind])
        measured.append(m)
        events.phase_finished.fire(measurement=m)
    return True


def _run_script_trial(executor: PhaseExecutor, name: str, workload: Workload, trial: int,
                      warmup: bool, runs: int, pace: Pace, events: RunEvents,
                      stop: threading.Event, measured: list[PhaseMeasurement],
                      plan: ScriptPlan) -> bool:
    """One phase of scripts (``runs`` script runs, or ``--duration``), measured per script
    (``script:NAME``, in the order given); summed into ``mix`` by the summary."""
    spec = PhaseSpec.of_scripts(plan, workload, trial, runs=runs, pace=pace)
    events.phase_started.fire(strategy=name, trial=trial, warmup=warmup, phase="mix",
                              total=spec.expected)
    run = executor.run_phase(spec, lambda n: events.progress.fire(advance=n))
    if stop.is_set():
        return False
    for kind in plan.kinds:
        m = PhaseMeasurement.merge(phase=kind, trial=trial, warmup=warmup,
                                   elapsed_s=run.elapsed_s,
                                   recorders=[r for r in run.recorders if r.kind == kind])
        measured.append(m)
        events.phase_finished.fire(measurement=m)
    return True

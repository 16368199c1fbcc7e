"""Drives a strategy through its trials and phases, on the executor its settings ask for:
threads or an event loop in this process (:mod:`poolbench.measure.executor`), or
several processes of either (:mod:`poolbench.measure.processes`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from poolbench.config import Pace
from poolbench.events import RunEvents
from poolbench.measure.cluster import ClusterExecutor, ClusterNodes
from poolbench.measure.executor import PhaseExecutor, PhaseRun, StopFlag, in_process_executor
from poolbench.measure.metrics import OperationRecorder, PhaseMeasurement
from poolbench.measure.processes import ProcessExecutor
from poolbench.strategies.base import Strategy, StrategySettings
from poolbench.workloads.base import PhaseOutcome, WindowWork
from poolbench.workloads.phase import PhaseSpec


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


def run_strategy(cls: type[Strategy], settings: StrategySettings, *, work: WindowWork,
                 warmup: int, trials: int, events: RunEvents,
                 stop: threading.Event | None = None, pace: Pace | None = None,
                 processes: int = 1, label: str | None = None,
                 cluster: ClusterNodes | None = None,
                 window: int | None = None) -> StrategyMeasurement:
    """Open the strategy, run warm-up then counted trials of ``work`` (its workload's
    phases for this window), close it.

    ``window`` (``--interleave``, which runs strategies a counted trial at a time) runs
    only counted trial number ``window``, after ``warmup`` warm-up trials of its own: each
    window opens a fresh pool, and a fresh pool is cold. Trials are numbered in the order
    the strategy runs them, across windows.

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
        for trial, warm in trial_plan(warmup=warmup, trials=trials, window=window):
            driver = _TrialDriver(executor, label, trial, warm, events, stop, measured)
            if not work.run_trial(trial, pace.of_trial(warm), driver):
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


@dataclass
class _TrialDriver:
    """One trial's phases, as its workload asks for them: each runs on the executor
    between the phase events; what the workload files as measured becomes a
    :class:`PhaseMeasurement` (warm-ups marked) announced by ``phase_finished``."""

    executor: PhaseExecutor
    label: str
    trial: int
    warmup: bool
    events: RunEvents
    stop: threading.Event
    phases: list[PhaseMeasurement]  # every phase measured so far, in order

    def run(self, spec: PhaseSpec) -> PhaseRun | None:
        events = self.events
        events.phase_started.fire(strategy=self.label, trial=self.trial, warmup=self.warmup,
                                  phase=spec.phase, total=spec.expected)
        run = self.executor.run_phase(spec, lambda n: events.progress.fire(advance=n))
        return None if self.stop.is_set() else run

    def measured(self, phase: str, outcome: PhaseOutcome,
                 recorders: Sequence[OperationRecorder]) -> None:
        assert isinstance(outcome, PhaseRun)
        m = PhaseMeasurement.merge(phase=phase, trial=self.trial, warmup=self.warmup,
                                   elapsed_s=outcome.elapsed_s, recorders=list(recorders))
        self.phases.append(m)
        self.events.phase_finished.fire(measurement=m)

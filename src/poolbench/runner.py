"""Drives workers through the four phases of each trial, and times them.

Sync strategies run on a ``ThreadPoolExecutor`` of ``--workers`` threads (as in
the seed); async strategies on ``--workers`` asyncio tasks in one event loop.
Either way each worker pulls the next operation from a shared iterator and
records into its own :class:`OperationRecorder`; the phase clock starts once
all workers exist and stops when the last one finishes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from poolbench.events import RunEvents
from poolbench.metrics import MissingRow, OperationRecorder, PhaseMeasurement, now_ns
from poolbench.strategies.base import AsyncStrategy, Strategy, SyncStrategy
from poolbench.workload import PHASES, Statement, Workload

PROGRESS_EVERY = 16  # operations a worker finishes between two progress events
Params = list[tuple[object, ...]]
OnProgress = Callable[[int], None]


@dataclass
class PhaseRun:
    """Raw outcome of one phase: wall-clock seconds, per-worker recorders, per-item results."""

    elapsed_s: float
    recorders: list[OperationRecorder]
    results: list[int | None]


class PhaseExecutor(Protocol):
    strategy: Strategy

    def open(self) -> float: ...
    def run_phase(self, statement: Statement, params: Params, on_progress: OnProgress) -> PhaseRun:
        ...
    def close(self) -> None: ...


class ThreadExecutor:
    """Runs a sync strategy on a pool of threads kept for the whole strategy."""

    def __init__(self, strategy: SyncStrategy, workers: int, stop: threading.Event) -> None:
        self.strategy = strategy
        self.workers = workers
        self.stop = stop
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poolbench")

    def open(self) -> float:
        t0 = now_ns()
        self.strategy.open()
        return (now_ns() - t0) / 1e9

    def run_phase(self, statement: Statement, params: Params, on_progress: OnProgress) -> PhaseRun:
        results: list[int | None] = [None] * len(params)
        items = iter(range(len(params)))
        ready = threading.Barrier(self.workers + 1)

        def worker() -> OperationRecorder:
            rec = OperationRecorder()
            ready.wait()
            done = 0
            for i in items:
                if self.stop.is_set():
                    break
                results[i] = drive(operation(self.strategy, statement, params[i], rec))
                done += 1
                if done % PROGRESS_EVERY == 0:
                    on_progress(PROGRESS_EVERY)
            on_progress(done % PROGRESS_EVERY)
            return rec

        futures = [self._threads.submit(worker) for _ in range(self.workers)]
        ready.wait()  # every thread exists and waits: start the clock now
        t0 = now_ns()
        recorders = [f.result() for f in futures]
        return PhaseRun((now_ns() - t0) / 1e9, recorders, results)

    def close(self) -> None:
        try:
            self.strategy.close()
        finally:
            self._threads.shutdown(wait=True)


class AsyncioExecutor:
    """Runs an async strategy as tasks on one event loop owned by this executor."""

    def __init__(self, strategy: AsyncStrategy, workers: int, stop: threading.Event) -> None:
        self.strategy = strategy
        self.workers = workers
        self.stop = stop
        self._loop = asyncio.new_event_loop()

    def open(self) -> float:
        t0 = now_ns()
        self._loop.run_until_complete(self.strategy.open())
        return (now_ns() - t0) / 1e9

    def run_phase(self, statement: Statement, params: Params, on_progress: OnProgress) -> PhaseRun:
        return self._loop.run_until_complete(self._phase(statement, params, on_progress))

    async def _phase(self, statement: Statement, params: Params,
                     on_progress: OnProgress) -> PhaseRun:
        results: list[int | None] = [None] * len(params)
        items = iter(range(len(params)))

        async def worker() -> OperationRecorder:
            rec = OperationRecorder()
            done = 0
            for i in items:
                if self.stop.is_set():
                    break
                results[i] = await drive_async(operation(self.strategy, statement, params[i], rec))
                done += 1
                if done % PROGRESS_EVERY == 0:
                    on_progress(PROGRESS_EVERY)
            on_progress(done % PROGRESS_EVERY)
            return rec

        t0 = now_ns()
        recorders = await asyncio.gather(*(worker() for _ in range(self.workers)))
        return PhaseRun((now_ns() - t0) / 1e9, list(recorders), results)

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self.strategy.close())
        finally:
            self._loop.close()


Step = Callable[[], Any]
OperationSteps = Generator[Step, Any, "int | None"]


def operation(strategy: Strategy, statement: Statement, params: tuple[object, ...],
              rec: OperationRecorder) -> OperationSteps:
    """One timed operation, written once for sync and async strategies.

    A generator that yields the driver calls (acquire, execute, release) as
    zero-argument callables; :func:`drive` calls them, :func:`drive_async` awaits
    them, and either sends back the result or throws the exception in.
    """
    t0 = now_ns()
    try:
        conn = yield strategy.acquire
    except Exception as exc:
        rec.fail(exc)
        return None
    t1 = now_ns()
    result = error = None
    try:
        result = yield lambda: strategy.execute(conn, statement, params)
    except Exception as exc:
        error = exc
    t2 = now_ns()
    try:
        yield lambda: strategy.release(conn)
    except Exception as exc:
        error = error or exc
    t3 = now_ns()
    return _settle(statement, result, error, rec, (t0, t1, t2, t3))


class _Finished(NamedTuple):
    value: int | None


def _advance(steps: OperationSteps, value: Any, error: BaseException | None) -> Step | _Finished:
    """Send a step's result (or throw its error) into the operation; get its next step."""
    try:
        return steps.send(value) if error is None else steps.throw(error)
    except StopIteration as done:
        return _Finished(done.value)


def drive(steps: OperationSteps) -> int | None:
    """Run an operation's steps by calling them (sync strategies)."""
    value, error = None, None
    while not isinstance(step := _advance(steps, value, error), _Finished):
        try:
            value, error = step(), None
        except Exception as exc:
            value, error = None, exc
    return step.value


async def drive_async(steps: OperationSteps) -> int | None:
    """Run an operation's steps by awaiting them (async strategies)."""
    value, error = None, None
    while not isinstance(step := _advance(steps, value, error), _Finished):
        try:
            value, error = await step(), None
        except Exception as exc:
            value, error = None, exc
    return step.value


def _settle(statement: Statement, result: int | None, error: BaseException | None,
            rec: OperationRecorder, times: tuple[int, int, int, int]) -> int | None:
    """Record one operation; return its result even when it failed late (so a row that
    was created is still known, and deleted, even if its connection broke on release)."""
    # The row a statement must have touched: an id for create/read, 1 for update/delete.
    if error is None and (result is None or (not statement.returns_row and result != 1)):
        error = MissingRow(f"{statement.phase}: no row where the run's own insert put one")
    if error is None:
        rec.record(*times)
    else:
        rec.fail(error)
    return result


def make_executor(strategy: Strategy, workers: int, stop: threading.Event) -> PhaseExecutor:
    if isinstance(strategy, AsyncStrategy):
        return AsyncioExecutor(strategy, workers, stop)
    return ThreadExecutor(strategy, workers, stop)


@dataclass(frozen=True)
class StrategyMeasurement:
    """Everything measured for one strategy: open time, each phase of each trial, counters.

    ``interrupted`` is set when the stop event cut the strategy short; the phase
    that was cut is not among ``phases`` (its figures would describe part of a phase).
    """

    strategy: Strategy
    open_s: float
    phases: tuple[PhaseMeasurement, ...]
    stats: dict[str, int]
    interrupted: bool = False


def run_strategy(strategy: Strategy, *, workload: Workload, rows: int, workers: int,
                 warmup: int, trials: int, events: RunEvents,
                 stop: threading.Event | None = None) -> StrategyMeasurement:
    """Open the strategy, run warm-up then counted trials of the four phases, close it.

    Setting ``stop`` makes every worker finish its current operation and stop;
    the strategy then closes and returns what it measured, marked interrupted.
    """
    stop = stop or threading.Event()
    statements = workload.statements()
    executor = make_executor(strategy, workers, stop)
    measured: list[PhaseMeasurement] = []
    events.strategy_started.fire(strategy=strategy.name, trials=warmup + trials)
    open_s = 0.0
    try:
        open_s = executor.open()
        for trial in range(warmup + trials):
            if not _run_trial(executor, statements, workload, trial, trial < warmup, rows,
                              events, stop, measured):
                break
    finally:
        executor.close()
    return StrategyMeasurement(strategy, open_s, tuple(measured), strategy.stats(),
                               interrupted=stop.is_set())


def _run_trial(executor: PhaseExecutor, statements: dict[str, Statement], workload: Workload,
               trial: int, warmup: bool, rows: int, events: RunEvents, stop: threading.Event,
               measured: list[PhaseMeasurement]) -> bool:
    """Run the four phases of one trial; False if the stop event cut it short."""
    name = executor.strategy.name
    ids: list[int] = []
    for phase in PHASES:
        params = (workload.create_params(trial, rows) if phase == "create"
                  else workload.update_params(trial, ids) if phase == "update"
                  else [(i,) for i in ids])
        events.phase_started.fire(strategy=name, trial=trial, warmup=warmup, phase=phase,
                                  total=len(params))
        run = executor.run_phase(statements[phase], params,
                                 lambda n: events.progress.fire(advance=n))
        if stop.is_set():
            return False
        if phase == "create":
            ids = [r for r in run.results if r is not None]
        m = PhaseMeasurement.merge(phase=phase, trial=trial, warmup=warmup,
                                   elapsed_s=run.elapsed_s, recorders=run.recorders)
        measured.append(m)
        events.phase_finished.fire(measurement=m)
    return True

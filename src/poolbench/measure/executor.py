"""Executors: the workers of one process, driving a strategy through one phase.

Sync strategies run on a ``ThreadPoolExecutor`` of ``--workers`` threads (as in
the seed); async strategies on ``--workers`` asyncio tasks in one event loop.
Each worker pulls the next operation from a shared
:class:`~poolbench.workloads.phase.WorkSource` and records into its own
:class:`OperationRecorder`; the phase clock starts once every worker exists and
waits, and stops when the last one finishes.

In a phase of scripts, each worker compiles the scripts for itself (its client number
across the run is pgbench's ``:client_id``), and one operation is one run of a script on
one connection. An error that ends the run (see :mod:`poolbench.workloads.scripted`)
stops every worker of the phase after its current operation, and is raised once all
have stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from poolbench.db.workload import SCRIPT_ROLLBACK, Statement
from poolbench.errors import PoolbenchError
from poolbench.measure.metrics import (
    HISTOGRAMS,
    MissingRow,
    OperationRecorder,
    PhaseSink,
    StatementCounters,
    now_ns,
)
from poolbench.strategies.base import AsyncStrategy, Strategy, StrategySettings, SyncStrategy
from poolbench.workloads.phase import MixSource, PhaseSpec, ScriptSource, WorkSource
from poolbench.workloads.scripted import ScriptClient, run_ending_error

PROGRESS_EVERY = 16  # operations a worker finishes between two progress events
OnProgress = Callable[[int], None]
# Called once every worker of a phase exists and waits; returns the instant the phase
# clock starts (``now_ns``), never one in the past: the processes' start barrier.
StartGate = Callable[[], int]


class StopFlag(Protocol):
    """``threading.Event`` or ``multiprocessing.Event``: what workers check between operations."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class PhaseRun:
    """Raw outcome of one phase: its clock (start and end on this machine's monotonic
    clock), per-worker recorders, rows created.

    What the start barrier decided, so it can be checked without timing anything:
    ``starts_ns`` holds each share's clock start (one per process; with ``--rate`` its
    operation *n* is due ``n / rate`` after it), ``named_start_ns`` the instant the
    parent named to every process (None in one process)."""

    start_ns: int
    end_ns: int
    recorders: list[OperationRecorder]
    created: list[int] = field(default_factory=list)
    starts_ns: list[int] = field(default_factory=list)
    named_start_ns: int | None = None

    @property
    def elapsed_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


class PhaseExecutor(Protocol):
    def open(self) -> float: ...
    def run_phase(self, spec: PhaseSpec, on_progress: OnProgress) -> PhaseRun: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...


class _Worker:
    """One worker's loop, shared by threads and tasks up to the call that runs an operation."""

    def __init__(self, source: WorkSource, leak_threshold_s: float,
                 sinks: dict[str, PhaseSink]) -> None:
        self.rec = OperationRecorder(leak_threshold_s, "", sinks[""])
        # A source with kinds (a mix's statements, scripts) records each apart (its
        # recorder's ``kind``); else one recorder.
        self.recs = {kind: OperationRecorder(leak_threshold_s, kind, sinks[kind])
                     for kind in source.kinds}
        self.created: list[int] = []
        self.keep = source.keeps_rows
        self.done = 0
        self.clients: list[ScriptClient] = []
        self.fatal: PoolbenchError | None = None  # what ended the run (scripts)

    def compile_scripts(self, source: ScriptSource, number: int) -> None:
        """This worker's clients of the phase's scripts: worker ``number`` of this process
        is client ``number * stride + offset`` of the run (processes' shares interleave)."""
        spec = source.spec
        assert spec.scripts is not None
        try:
            self.clients = [ScriptClient(script, spec.scripts, trial=spec.trial,
                                         client_id=number * spec.stride + spec.offset)
                            for script in source.scripts]
        except PoolbenchError as exc:  # constants this client's :client_id makes fail
            self.fatal = exc
            return
        for kind, client in zip(spec.scripts.kinds, self.clients):
            self.recs[kind].statements = StatementCounters(client.labels)

    def start(self, origin_ns: int) -> None:
        for rec in (self.rec, *self.recs.values()):
            rec.origin_ns = origin_ns

    def recorders(self) -> list[OperationRecorder]:
        return list(self.recs.values()) if self.recs else [self.rec]

    def settle(self, result: int | None, on_progress: OnProgress) -> None:
        if self.keep and result is not None:
            self.created.append(result)
        self.done += 1
        if self.done % PROGRESS_EVERY == 0:
            on_progress(PROGRESS_EVERY)


class _InProcessExecutor:
    """What the thread and the event-loop executors share: their settings and counters."""

    def __init__(self, strategy: Strategy, workers: int, stop: StopFlag,
                 leak_threshold_s: float) -> None:
        self.strategy = strategy
        self.workers = workers
        self.stop = stop
        self.leak_threshold_s = leak_threshold_s
        self.opened = False

    def stats(self) -> dict[str, int]:
        return self.strategy.stats()


class ThreadExecutor(_InProcessExecutor):
    """Runs a sync strategy on a pool of threads kept for the whole strategy."""

    strategy: SyncStrategy

    def __init__(self, strategy: SyncStrategy, workers: int, stop: StopFlag,
                 leak_threshold_s: float) -> None:
        super().__init__(strategy, workers, stop, leak_threshold_s)
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poolbench")

    def open(self) -> float:
        t0 = now_ns()
        self.strategy.open()
        self.opened = True
        return (now_ns() - t0) / 1e9

    def run_phase(self, spec: PhaseSpec, on_progress: OnProgress,
                  gate: StartGate = now_ns) -> PhaseRun:
        source = spec.source()
        sinks: dict[str, PhaseSink] = defaultdict(PhaseSink)
        ready = threading.Barrier(self.workers + 1, action=lambda: source.start(gate()))
        strategy, stop, statement = self.strategy, self.stop, spec.statement
        numbers = itertools.count()
        ended = threading.Event()  # a worker met an error that ends the run

        def script_worker() -> _Worker:
            w = _Worker(source, self.leak_threshold_s, sinks)
            assert isinstance(source, ScriptSource) and spec.scripts is not None
            w.compile_scripts(source, next(numbers))
            if w.fatal is not None:
                ended.set()
            recs = [w.recs[kind] for kind in spec.scripts.kinds]
            read_only = spec.scripts.read_only
            ready.wait()
            w.start(source.start_ns)
            while not stop.is_set() and not ended.is_set() \
                    and (item := source.next_script()) is not None:
                index, scheduled = item
                if scheduled is not None and (delay := scheduled - now_ns()) > 0 \
                        and stop.wait(delay / 1e9):
                    break
                try:
                    call_script(strategy, w.clients[index], recs[index], scheduled, read_only)
                except PoolbenchError as exc:
                    w.fatal = exc
                    ended.set()
                    break
                w.settle(None, on_progress)
            on_progress(w.done % PROGRESS_EVERY)
            return w

        def mix_worker() -> _Worker:
            w = _Worker(source, self.leak_threshold_s, sinks)
            ready.wait()
            w.start(source.start_ns)
            assert isinstance(source, MixSource)
            while not stop.is_set() and (item := source.next_mix()) is not None:
                kind, params, scheduled, taken = item
                if scheduled is not None and (delay := scheduled - now_ns()) > 0 \
                        and stop.wait(delay / 1e9):
                    source.settle(kind, None if taken is None else 0, taken)
                    break
                source.settle(kind, call_operation(strategy, kind, params, w.recs[kind.phase],
                                                   scheduled), taken)
                w.settle(None, on_progress)
            on_progress(w.done % PROGRESS_EVERY)
            return w

        def worker() -> _Worker:
            # The hot loop of every run: call_operation's steps and _Worker.settle's are
            # written out here for an unpaced operation (a call each costs more than the
            # step; harness_ir.txt); a paced one, which waits anyway, calls them.
            w = _Worker(source, self.leak_threshold_s, sinks)
            ready.wait()
            w.start(source.start_ns)
            rec, keep, created, done = w.rec, w.keep, w.created, 0
            is_set, next_item, times, kept = stop.is_set, source.next, rec.times, rec.kept
            acquire, execute, release = strategy.acquire, strategy.execute, strategy.release
            returns_row = statement.returns_row
            while not is_set() and (item := next_item()) is not None:
                params, scheduled = item
                if scheduled is not None:
                    if (delay := scheduled - now_ns()) > 0 and stop.wait(delay / 1e9):
                        break
                    result = call_operation(strategy, statement, params, rec, scheduled)
                else:
                    t0 = now_ns()
                    try:
                        conn = acquire()
                    except Exception as exc:
                        rec.fail(exc, "acquire", t0, now_ns())
                        result = None
                    else:
                        t1 = now_ns()
                        result = error = None
                        stage = "execute"
                        try:
                            result = execute(conn, statement, params)
                        except Exception as exc:
                            error = exc
                        t2 = now_ns()
                        try:
                            release(conn)
                        except Exception as exc:
                            if error is None:
                                error, stage = exc, "release"
                        t3 = now_ns()
                        if error is None and result is not None and (returns_row or result == 1):
                            times += (t0, t1, t2, t3)  # rec.record's step; kept() below
                        else:
                            result = _settle(statement, result, error, stage, rec,
                                             (t0, t1, t2, t3, None))
                if keep and result is not None:
                    created.append(result)
                done += 1
                if not done % PROGRESS_EVERY:
                    on_progress(PROGRESS_EVERY)
                    kept()
            w.done = done
            on_progress(done % PROGRESS_EVERY)
            return w

        body = {"statement": worker, "mix": mix_worker, "script": script_worker}[source.loop]
        futures = [self._threads.submit(body) for _ in range(self.workers)]
        ready.wait()  # every thread exists and waits: the clock starts now (barrier action)
        finished = [f.result() for f in futures]
        return _phase_run(source, finished, sinks)

    def close(self) -> None:
        try:
            if self.opened:  # a strategy whose open failed has nothing to close
                self.strategy.close()
        finally:
            self._threads.shutdown(wait=True)


class AsyncioExecutor(_InProcessExecutor):
    """Runs an async strategy as tasks on one event loop owned by this executor."""

    strategy: AsyncStrategy

    def __init__(self, strategy: AsyncStrategy, workers: int, stop: StopFlag,
                 leak_threshold_s: float) -> None:
        super().__init__(strategy, workers, stop, leak_threshold_s)
        self._loop = asyncio.new_event_loop()

    def open(self) -> float:
        t0 = now_ns()
        self._loop.run_until_complete(self.strategy.open())
        self.opened = True
        return (now_ns() - t0) / 1e9

    def run_phase(self, spec: PhaseSpec, on_progress: OnProgress,
                  gate: StartGate = now_ns) -> PhaseRun:
        return self._loop.run_until_complete(self._phase(spec, on_progress, gate))

    async def _phase(self, spec: PhaseSpec, on_progress: OnProgress,
                     gate: StartGate) -> PhaseRun:
        source = spec.source()
        sinks: dict[str, PhaseSink] = defaultdict(PhaseSink)
        waiting = 0
        all_waiting, go = asyncio.Event(), asyncio.Event()
        strategy, stop, statement = self.strategy, self.stop, spec.statement
        numbers = itertools.count()
        ended = False  # a task met an error that ends the run

        async def ready() -> _Worker:
            nonlocal waiting, ended
            w = _Worker(source, self.leak_threshold_s, sinks)
            if isinstance(source, ScriptSource):
                w.compile_scripts(source, next(numbers))
                ended = ended or w.fatal is not None
            waiting += 1
            if waiting == self.workers:
                all_waiting.set()
            await go.wait()
            w.start(source.start_ns)
            return w

        async def mix_worker() -> _Worker:
            w = await ready()
            assert isinstance(source, MixSource)
            while not stop.is_set() and (item := source.next_mix()) is not None:
                kind, params, scheduled, taken = item
                if scheduled is not None and (delay := scheduled - now_ns()) > 0:
                    await asyncio.sleep(delay / 1e9)
                    if stop.is_set():
                        source.settle(kind, None if taken is None else 0, taken)
                        break
                source.settle(kind, await await_operation(strategy, kind, params,
                                                          w.recs[kind.phase], scheduled), taken)
                w.settle(None, on_progress)
            on_progress(w.done % PROGRESS_EVERY)
            return w

        async def worker() -> _Worker:
            # ThreadExecutor's statement loop, awaited: await_operation's and settle's
            # steps written out for an unpaced operation.
            w = await ready()
            rec, keep, created, done = w.rec, w.keep, w.created, 0
            is_set, next_item, times, kept = stop.is_set, source.next, rec.times, rec.kept
            acquire, execute, release = strategy.acquire, strategy.execute, strategy.release
            returns_row = statement.returns_row
            while not is_set() and (item := next_item()) is not None:
                params, scheduled = item
                if scheduled is not None:
                    if (delay := scheduled - now_ns()) > 0:
                        await asyncio.sleep(delay / 1e9)
                        if is_set():
                            break
                    result = await await_operation(strategy, statement, params, rec, scheduled)
                else:
                    t0 = now_ns()
                    try:
                        conn = await acquire()
                    except Exception as exc:
                        rec.fail(exc, "acquire", t0, now_ns())
                        result = None
                    else:
                        t1 = now_ns()
                        result = error = None
                        stage = "execute"
                        try:
                            result = await execute(conn, statement, params)
                        except Exception as exc:
                            error = exc
                        t2 = now_ns()
                        try:
                            await release(conn)
                        except Exception as exc:
                            if error is None:
                                error, stage = exc, "release"
                        t3 = now_ns()
                        if error is None and result is not None and (returns_row or result == 1):
                            times += (t0, t1, t2, t3)  # rec.record's step; kept() below
                        else:
                            result = _settle(statement, result, error, stage, rec,
                                             (t0, t1, t2, t3, None))
                if keep and result is not None:
                    created.append(result)
                done += 1
                if not done % PROGRESS_EVERY:
                    on_progress(PROGRESS_EVERY)
                    kept()
            w.done = done
            on_progress(done % PROGRESS_EVERY)
            return w

        async def script_worker() -> _Worker:
            nonlocal ended
            w = await ready()
            assert isinstance(source, ScriptSource) and spec.scripts is not None
            recs = [w.recs[kind] for kind in spec.scripts.kinds]
            read_only = spec.scripts.read_only
            while not stop.is_set() and not ended and (item := source.next_script()) is not None:
                index, scheduled = item
                if scheduled is not None and (delay := scheduled - now_ns()) > 0:
                    await asyncio.sleep(delay / 1e9)
                    if stop.is_set():
                        break
                try:
                    await await_script(strategy, w.clients[index], recs[index], scheduled,
                                       read_only)
                except PoolbenchError as exc:
                    w.fatal, ended = exc, True
                    break
                w.settle(None, on_progress)
            on_progress(w.done % PROGRESS_EVERY)
            return w

        body = {"statement": worker, "mix": mix_worker, "script": script_worker}[source.loop]
        tasks = [asyncio.ensure_future(body()) for _ in range(self.workers)]
        await all_waiting.wait()  # every task exists and waits: the clock starts now
        source.start(gate())
        go.set()
        finished = await asyncio.gather(*tasks)
        return _phase_run(source, list(finished), sinks)

    def close(self) -> None:
        try:
            if self.opened:  # a strategy whose open failed has nothing to close
                self._loop.run_until_complete(self.strategy.close())
        finally:
            self._loop.close()


def _phase_run(source: WorkSource, finished: list[_Worker],
               sinks: dict[str, PhaseSink]) -> PhaseRun:
    """The phase's outcome; for a mix, ``created`` holds the rows still alive at its end.
    Each kind's merged seconds and totals ride on its first recorder (they travel with
    recorders); the others' counts are in them. An error that ended a phase of scripts is
    raised here, once every worker has stopped."""
    end = now_ns()
    fatal = next((w.fatal for w in finished if w.fatal is not None), None)
    if fatal is not None:
        raise fatal
    recorders = [r for w in finished for r in w.recorders()]
    for rec in recorders:
        rec.finish()
    carried: set[str] = set()
    for rec in recorders:
        if rec.kind not in carried and rec.kind in sinks:
            sink = sinks[rec.kind]
            rec.seconds = sink.seconds
            rec.waits = dict(sink.waits)
            rec.tenths = dict(sink.tenths)
            for kind in HISTOGRAMS:
                setattr(rec, kind, sink.counts(kind))
            carried.add(rec.kind)
    created = source.alive([i for w in finished for i in w.created])
    return PhaseRun(source.start_ns, end, recorders, created, [source.start_ns])


def call_operation(strategy: SyncStrategy, statement: Statement, params: tuple[object, ...],
                   rec: OperationRecorder, scheduled: int | None = None) -> int | None:
    """One timed operation of a sync strategy: acquire, execute, release, record.

    :func:`await_operation` is the same steps awaited. The two are written out
    rather than derived from one generator: driving a generator costs ~3.5 µs
    per operation in CPython, more than all of poolbench's recording, and the
    load generator's own cost is a figure we publish (``harness_us_per_op``).
    """
    t0 = now_ns()
    try:
        conn = strategy.acquire()
    except Exception as exc:
        rec.fail(exc, "acquire", t0, now_ns(), scheduled)
        return None
    t1 = now_ns()
    result = error = None
    stage = "execute"
    try:
        result = strategy.execute(conn, statement, params)
    except Exception as exc:
        error = exc
    t2 = now_ns()
    try:
        strategy.release(conn)
    except Exception as exc:
        if error is None:
            error, stage = exc, "release"
    t3 = now_ns()
    if error is None and result is not None and (statement.returns_row or result == 1):
        rec.record(t0, t1, t2, t3, scheduled)  # the usual case, without _settle's call
        return result
    return _settle(statement, result, error, stage, rec, (t0, t1, t2, t3, scheduled))


async def await_operation(strategy: AsyncStrategy, statement: Statement,
                          params: tuple[object, ...], rec: OperationRecorder,
                          scheduled: int | None = None) -> int | None:
    """:func:`call_operation`, awaited (async strategies)."""
    t0 = now_ns()
    try:
        conn = await strategy.acquire()
    except Exception as exc:
        rec.fail(exc, "acquire", t0, now_ns(), scheduled)
        return None
    t1 = now_ns()
    result = error = None
    stage = "execute"
    try:
        result = await strategy.execute(conn, statement, params)
    except Exception as exc:
        error = exc
    t2 = now_ns()
    try:
        await strategy.release(conn)
    except Exception as exc:
        if error is None:
            error, stage = exc, "release"
    t3 = now_ns()
    if error is None and result is not None and (statement.returns_row or result == 1):
        rec.record(t0, t1, t2, t3, scheduled)  # the usual case, without _settle's call
        return result
    return _settle(statement, result, error, stage, rec, (t0, t1, t2, t3, scheduled))


def _settle(statement: Statement, result: int | None, error: BaseException | None, stage: str,
            rec: OperationRecorder, times: tuple[int, int, int, int, int | None]) -> int | None:
    """Record one operation; return its result even when it failed late (so a row that
    was created is still known, and deleted, even if its connection broke on release)."""
    # The row a statement must have touched: an id for create/read, 1 for update/delete.
    if error is None and (result is None or (not statement.returns_row and result != 1)):
        error = MissingRow(f"{statement.phase}: no row where the run's own insert put one")
    if error is None:
        rec.record(*times)
    else:
        t0, t1, _, t3, scheduled = times
        rec.fail(error, stage, t0, t3, scheduled, held_ns=t3 - t1)
    return result


def call_script(strategy: SyncStrategy, client: ScriptClient, rec: OperationRecorder,
                scheduled: int | None = None, read_only: bool = False) -> None:
    """One run of a script as one timed operation: acquire, its statements in order (a
    ``\\sleep`` holds the connection), release. A statement that fails ends the script's
    run; inside BEGIN ... COMMIT the connection is rolled back before it goes back, so no
    pooled connection returns in a failed transaction. Raises ScriptError when the failure
    ends the whole run (:func:`~poolbench.workloads.scripted.run_ending_error`).
    Each command's time, successes and failures go to ``rec.statements`` (pgbench ``-r``):
    one clock read and two list additions per command, nothing allocated.

    :func:`await_script` is the same steps awaited (written out, as
    :func:`call_operation` is, for the same reason)."""
    steps = client.run()  # a failing \set raises before any connection is taken
    t0 = now_ns()
    try:
        conn = strategy.acquire()
    except Exception as exc:
        rec.fail(exc, "acquire", t0, now_ns(), scheduled)
        return
    t1 = now_ns()
    error: BaseException | None = None
    failed: Statement | None = None
    stage = "execute"
    counters = rec.statements
    assert counters is not None
    counters.runs += 1
    ns, count = counters.ns, counters.count
    start = t1  # one clock read per command: its end is the next one's start
    for statement, value, slot in steps:
        try:
            if statement is None:
                time.sleep(value)  # type: ignore[arg-type]
            else:
                strategy.execute(conn, statement, value)  # type: ignore[arg-type]
        except Exception as exc:
            error, failed = exc, statement
            counters.failed[slot] += 1
            break
        end = now_ns()
        ns[slot] += end - start
        count[slot] += 1
        start = end
    if failed is not None and failed.in_transaction:
        with contextlib.suppress(Exception):  # a broken connection: its pool discards it
            strategy.execute(conn, SCRIPT_ROLLBACK, ())
    t2 = now_ns()
    try:
        strategy.release(conn)
    except Exception as exc:
        if error is None:
            error, stage = exc, "release"
    _settle_script(failed, error, stage, rec, (t0, t1, t2, now_ns(), scheduled), read_only)


async def await_script(strategy: AsyncStrategy, client: ScriptClient, rec: OperationRecorder,
                       scheduled: int | None = None, read_only: bool = False) -> None:
    """:func:`call_script`, awaited (async strategies); a ``\\sleep`` is an
    ``asyncio.sleep`` that holds the connection."""
    steps = client.run()
    t0 = now_ns()
    try:
        conn = await strategy.acquire()
    except Exception as exc:
        rec.fail(exc, "acquire", t0, now_ns(), scheduled)
        return
    t1 = now_ns()
    error: BaseException | None = None
    failed: Statement | None = None
    stage = "execute"
    counters = rec.statements
    assert counters is not None
    counters.runs += 1
    ns, count = counters.ns, counters.count
    start = t1  # one clock read per command: its end is the next one's start
    for statement, value, slot in steps:
        try:
            if statement is None:
                await asyncio.sleep(value)  # type: ignore[arg-type]
            else:
                await strategy.execute(conn, statement, value)  # type: ignore[arg-type]
        except Exception as exc:
            error, failed = exc, statement
            counters.failed[slot] += 1
            break
        end = now_ns()
        ns[slot] += end - start
        count[slot] += 1
        start = end
    if failed is not None and failed.in_transaction:
        with contextlib.suppress(Exception):
            await strategy.execute(conn, SCRIPT_ROLLBACK, ())
    t2 = now_ns()
    try:
        await strategy.release(conn)
    except Exception as exc:
        if error is None:
            error, stage = exc, "release"
    _settle_script(failed, error, stage, rec, (t0, t1, t2, now_ns(), scheduled), read_only)


def _settle_script(failed: Statement | None, error: BaseException | None, stage: str,
                   rec: OperationRecorder, times: tuple[int, int, int, int, int | None],
                   read_only: bool) -> None:
    """Record one script run (no row check: a script's results are its own); raise the
    error that ends the run, if its failure is one."""
    if error is None:
        rec.record(*times)
        return
    t0, t1, _, t3, scheduled = times
    rec.fail(error, stage, t0, t3, scheduled, held_ns=t3 - t1)
    if failed is not None:
        fatal = run_ending_error(failed, error, read_only=read_only)
        if fatal is not None:
            raise fatal


def in_process_executor(cls: type[Strategy], settings: StrategySettings, *,
                        stop: StopFlag) -> ThreadExecutor | AsyncioExecutor:
    """Threads for a sync strategy, one event loop for an async one."""
    leak = settings.acquire_timeout_s
    if issubclass(cls, AsyncStrategy):
        return AsyncioExecutor(cls(settings), settings.workers, stop, leak)
    return ThreadExecutor(cls(settings), settings.workers, stop, leak)

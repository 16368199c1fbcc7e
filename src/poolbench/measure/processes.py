"""``--processes P``: one strategy's workers spread over P processes, so one Python
process's GIL is not the ceiling of the load generator.

Each process runs the same executor as a single-process run (threads, or one
event loop) on its share: ``--workers``/P workers and a pool of ``--pool-max``/P
connections (``--pool-min``/P kept open), remainders going to the first
processes. Operations are numbered globally and process *p* takes numbers
p, p+P, p+2P..., so rows, usernames and (with ``--rate``) schedules are the
same as in one process. A phase starts behind a barrier: every process builds
its workers, and reports ready when all of them wait; only then does the parent
name a start instant a little ahead, and a process that gets it late starts
when it gets it, never earlier (no backdated clock, no burst of overdue
operations). The phase's time runs from the earliest start to the last finish
on the system-wide monotonic clock; per-worker recorders come back and merge
exactly like threads' do.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import signal
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any

from poolbench.db.target import redact
from poolbench.errors import PoolbenchError, ServerError, WorkerProcessError
from poolbench.measure.executor import OnProgress, PhaseRun, StopFlag, in_process_executor
from poolbench.measure.metrics import now_ns
from poolbench.strategies import load_strategy
from poolbench.strategies.base import Strategy, StrategySettings
from poolbench.workloads.phase import PhaseSpec

GO_AHEAD_S = 0.005  # every process waits at the barrier; all start this much after "go"
POLL_S = 0.1  # how often the parent looks at its stop flag while children work
RELAY_S = 0.02  # how often a child looks at the parent's stop flag (StopRelay)


def share(total: int, part: int, parts: int) -> int:
    """Part ``part`` of ``total`` split as evenly as possible, remainders first."""
    return total // parts + (1 if part < total % parts else 0)


def process_settings(settings: StrategySettings, part: int, parts: int) -> StrategySettings:
    return replace(settings, workers=share(settings.workers, part, parts),
                   pool_min=share(settings.pool_min, part, parts),
                   pool_max=share(settings.pool_max, part, parts))


class ProcessExecutor:
    """The executor protocol of :mod:`poolbench.measure.runner`, over several processes.

    ``go_ahead_s``: how far after "go" the named start lies; a process that learns it
    late starts when it learns it (a negative value makes every process late, which is
    how the tests check that no clock is ever backdated)."""

    def __init__(self, cls: type[Strategy], settings: StrategySettings, *, processes: int,
                 stop: StopFlag, go_ahead_s: float = GO_AHEAD_S) -> None:
        self.go_ahead_s = go_ahead_s
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.outer_stop = stop
        self.stop = ctx.Event()
        self.pipes: list[Connection] = []
        self.children = []
        for part in range(processes):
            mine, theirs = ctx.Pipe()
            child = ctx.Process(target=_child_main, name=f"poolbench-{part}", daemon=True,
                                args=(theirs, cls.name, process_settings(settings, part,
                                                                         processes), self.stop))
            child.start()
            theirs.close()
            self.pipes.append(mine)
            self.children.append(child)
        self._stats: dict[str, int] = {}
        self._answers: list[Any] = []
        self._failed: set[int] = set()  # processes that reported an error (and ended)

    def open(self) -> float:
        return max(self._ask_all([("open",)] * len(self.pipes)))

    def run_phase(self, spec: PhaseSpec, on_progress: OnProgress) -> PhaseRun:
        parts = len(self.pipes)
        self._send_all([("phase", spec.share(p, parts)) for p in range(parts)])
        failure = self._gather_or_failure()  # "ready": every process's workers wait
        start = now_ns() + int(self.go_ahead_s * 1e9)
        self._send_all([("go", start)] * parts)  # sent even after a failure: no one hangs
        if failure is not None:
            self._gather_or_failure()
            raise failure
        runs: list[PhaseRun] = self._gather()
        recorders = [r for run in runs for r in run.recorders]
        on_progress(sum(r.ok + sum(r.errors.values()) for r in recorders))
        return PhaseRun(min(run.start_ns for run in runs), max(run.end_ns for run in runs),
                        recorders, [i for run in runs for i in run.created],
                        starts_ns=[s for run in runs for s in run.starts_ns],
                        named_start_ns=start)

    def close(self) -> None:
        """Close every process's pool; a process that already failed has nothing to close
        (its error was raised where it happened)."""
        try:
            if self._failed:
                for index, pipe in enumerate(self.pipes):
                    if index not in self._failed:
                        with contextlib.suppress(OSError):
                            pipe.send(("close",))
                return
            stats: list[dict[str, int]] = self._ask_all([("close",)] * len(self.pipes))
            for part in stats:
                for key, value in part.items():
                    self._stats[key] = self._stats.get(key, 0) + value
        finally:
            for child in self.children:
                child.join(timeout=10)
                if child.is_alive():
                    child.kill()

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def _ask_all(self, messages: list[tuple[Any, ...]]) -> list[Any]:
        """Send each child its message; wait for every answer, passing on a stop request."""
        self._send_all(messages)
        return self._gather()

    def _send_all(self, messages: list[tuple[Any, ...]]) -> None:
        for pipe, message in zip(self.pipes, messages):
            try:
                pipe.send(message)
            except OSError:  # the child is gone: _gather reports it
                continue

    def _gather(self) -> list[Any]:
        failure = self._gather_or_failure()
        if failure is not None:
            raise failure
        return self._answers

    def _gather_or_failure(self) -> BaseException | None:
        """One answer from every child (in ``_answers``), or the first child's failure;
        on a failure, or a stop request, every child is asked to stop."""
        answers: dict[int, Any] = {}
        failure: BaseException | None = None
        while len(answers) < len(self.pipes):
            if self.outer_stop.is_set():
                self.stop.set()
            for pipe in wait([p for i, p in enumerate(self.pipes) if i not in answers], POLL_S):
                index = self.pipes.index(pipe)  # type: ignore[arg-type]
                try:
                    kind, value = pipe.recv()
                except (EOFError, OSError):
                    kind, value = "error", ServerError(
                        f"worker process {index} died (exit code {self.children[index].exitcode})")
                answers[index] = value
                if kind == "error":
                    self._failed.add(index)
                    if failure is None:
                        failure = value
                        self.stop.set()  # the others stop too
        self._answers = [answers[i] for i in range(len(self.pipes))]
        return failure


def _child_main(pipe: Connection, name: str, settings: StrategySettings, stop: StopFlag) -> None:
    """A worker process: build the strategy's executor, then obey the parent's messages."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent decides
    executor = None

    def gate() -> int:
        """The start barrier: say every worker waits, then start at the parent's instant."""
        pipe.send(("ready", None))
        _, start = pipe.recv()
        if (delay := start - now_ns()) > 0:
            time.sleep(delay / 1e9)
        return max(start, now_ns())

    relay = StopRelay(stop)
    try:
        executor = in_process_executor(load_strategy(name), settings, stop=relay.local)
        while True:
            message = pipe.recv()
            if message[0] == "open":
                pipe.send(("ok", executor.open()))
            elif message[0] == "phase":
                pipe.send(("ok", executor.run_phase(message[1], _ignore, gate)))
            else:
                executor.close()
                pipe.send(("ok", executor.stats()))
                return
    except BaseException as exc:
        pipe.send(("error", portable_error(exc, settings.target.secrets())))
    finally:
        relay.close()


class StopRelay:
    """The parent's stop flag as this process's own ``threading.Event`` (``local``), set by
    a thread that looks at the shared flag every RELAY_S. A worker looks at its stop flag
    once per operation: a multiprocessing Event's ``is_set`` takes a lock every process
    shares (0.6 µs alone, more when contended), a threading Event's reads an attribute.
    The relay only asks ``is_set``, never waits on the shared flag: a process that dies
    while waiting on it would leave the parent's ``set`` waiting for it to wake."""

    def __init__(self, shared: StopFlag) -> None:
        self.shared = shared
        self.local = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="poolbench-stop")
        self._thread.start()

    def _relay(self) -> None:
        while not self._closing.wait(RELAY_S):
            if self.shared.is_set():
                self.local.set()
                return

    def close(self) -> None:
        self._closing.set()
        self._thread.join()


def _ignore(advance: int) -> None:
    """Progress inside a child is summed by the parent when the phase ends."""


def portable_error(exc: BaseException, secrets: tuple[str, ...]) -> BaseException:
    """The exception itself if it is ours and survives pickling (our messages never carry a
    password), else a WorkerProcessError with its text, every secret masked."""
    if isinstance(exc, PoolbenchError):
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:
            pass
    return WorkerProcessError(redact(f"worker process: unexpected {type(exc).__name__}: {exc} "
                                     "(rerun with --debug for details)", *secrets))

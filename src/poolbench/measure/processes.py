"""``--processes P``: one strategy's workers spread over P processes, so one Python
process's GIL is not the ceiling of the load generator.

Each process runs the same executor as a single-process run (threads, or one
event loop) on its share: ``--workers``/P workers and a pool of ``--pool-max``/P
connections (``--pool-min``/P kept open), remainders going to the first
processes. Operations are numbered globally and process *p* takes numbers
p, p+P, p+2P..., so rows, usernames and (with ``--rate``) schedules are the
same as in one process. Every phase starts at one instant on the system-wide
monotonic clock; per-worker recorders come back and merge exactly like
threads' do.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any

from poolbench.errors import PoolbenchError, ServerError
from poolbench.measure.executor import OnProgress, PhaseRun, StopFlag, in_process_executor
from poolbench.measure.metrics import now_ns
from poolbench.measure.phase import PhaseSpec
from poolbench.strategies import load_strategy
from poolbench.strategies.base import Strategy, StrategySettings

START_AHEAD_S = 0.05  # every process gets the phase, then all start at the same instant
POLL_S = 0.1  # how often the parent looks at its stop flag while children work


def share(total: int, part: int, parts: int) -> int:
    """Part ``part`` of ``total`` split as evenly as possible, remainders first."""
    return total // parts + (1 if part < total % parts else 0)


def process_settings(settings: StrategySettings, part: int, parts: int) -> StrategySettings:
    return replace(settings, workers=share(settings.workers, part, parts),
                   pool_min=share(settings.pool_min, part, parts),
                   pool_max=share(settings.pool_max, part, parts))


class ProcessExecutor:
    """The executor protocol of :mod:`poolbench.measure.runner`, over several processes."""

    def __init__(self, cls: type[Strategy], settings: StrategySettings, *, processes: int,
                 stop: StopFlag) -> None:
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

    def open(self) -> float:
        return max(self._ask_all([("open",)] * len(self.pipes)))

    def run_phase(self, spec: PhaseSpec, on_progress: OnProgress,
                  start_ns: int | None = None) -> PhaseRun:
        start = start_ns or now_ns() + int(START_AHEAD_S * 1e9)
        parts = len(self.pipes)
        runs: list[PhaseRun] = self._ask_all(
            [("phase", spec.share(p, parts), start) for p in range(parts)])
        recorders = [r for run in runs for r in run.recorders]
        on_progress(sum(r.ok + sum(r.errors.values()) for r in recorders))
        return PhaseRun(max(run.elapsed_s for run in runs), recorders,
                        [i for run in runs for i in run.created])

    def close(self) -> None:
        try:
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
        answers: dict[int, Any] = {}
        failure: BaseException | None = None
        for index, (pipe, message) in enumerate(zip(self.pipes, messages)):
            try:
                pipe.send(message)
            except OSError:  # the child is gone; its error was reported already
                answers[index] = failure = failure or ServerError(
                    f"worker process {index} is gone (exit code {self.children[index].exitcode})")
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
                if kind == "error" and failure is None:
                    failure = value
                    self.stop.set()  # the others stop too
        if failure is not None:
            raise failure
        return [answers[i] for i in range(len(self.pipes))]


def _child_main(pipe: Connection, name: str, settings: StrategySettings, stop: StopFlag) -> None:
    """A worker process: build the strategy's executor, then obey the parent's messages."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent decides
    executor = None
    try:
        executor = in_process_executor(load_strategy(name), settings, stop=stop)
        while True:
            message = pipe.recv()
            if message[0] == "open":
                pipe.send(("ok", executor.open()))
            elif message[0] == "phase":
                pipe.send(("ok", executor.run_phase(message[1], _ignore, message[2])))
            else:
                executor.close()
                pipe.send(("ok", executor.stats()))
                return
    except BaseException as exc:
        pipe.send(("error", _portable(exc)))


def _ignore(advance: int) -> None:
    """Progress inside a child is summed by the parent when the phase ends."""


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling (ours do), else a ServerError saying it."""
    if isinstance(exc, PoolbenchError):
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:
            pass
    return ServerError(f"{type(exc).__name__}: {exc}")

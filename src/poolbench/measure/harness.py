"""poolbench's own cost per operation, measured on the path a run takes: the same
executor (``--workers`` threads, or tasks on one event loop), the same call or
await of each step, clock reads, recording and progress callback, around a
strategy whose every step returns at once.

Reported with every run (``harness_us_per_op``, per executor kind), so a reader
can see how much of a latency or a throughput limit is the load generator
rather than the pool.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from poolbench.db.workload import RunTable, Statement
from poolbench.measure.executor import (
    AsyncioExecutor,
    OnProgress,
    ThreadExecutor,
    in_process_executor,
)
from poolbench.measure.metrics import now_ns
from poolbench.strategies.base import AsyncStrategy, Strategy, StrategySettings, SyncStrategy
from poolbench.workloads.phase import PhaseSpec

SAMPLE_OPERATIONS = 20_000
# Measurements of SAMPLE_OPERATIONS each; the lowest is reported (timeit's rule: higher ones
# are other processes taking the cores, which a run's figures should not be blamed on).
REPEATS = 5
# Phases run first and not counted (pyperf's warm-up): the first phases on a fresh
# executor pay for its threads' first use and the allocator's first pages, which a run's
# own phases, many thousand operations long, do not.
WARMUPS = 1


class NullStrategy(SyncStrategy):
    """A sync strategy whose every step returns at once (the row check still passes)."""

    name = "null"
    driver = ""
    pooled = True
    per_operation = "nothing: measures poolbench itself"

    def open(self) -> None: ...
    def acquire(self) -> Any:
        return None
    def release(self, conn: Any) -> None: ...
    def execute(self, conn: Any, statement: Statement, params: tuple[object, ...]) -> int:
        return 1
    def close(self) -> None: ...


class AsyncNullStrategy(AsyncStrategy):
    """:class:`NullStrategy`, awaited: measures the asyncio path. Each step hands back a
    future already done (awaiting one returns its result at once, in C), not a coroutine
    of its own: a coroutine's making and running is the strategy's cost, as a driver's
    coroutines are the driver's, and would be charged to poolbench here."""

    name = "null-async"
    driver = ""
    pooled = True
    per_operation = "nothing: measures poolbench itself"

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        none, one = loop.create_future(), loop.create_future()
        none.set_result(None)
        one.set_result(1)
        self.acquire = lambda: none  # type: ignore[method-assign, assignment]
        self.release = lambda conn: none  # type: ignore[method-assign, assignment]
        self.execute = lambda conn, statement, params: one  # type: ignore[method-assign, assignment]

    async def acquire(self) -> Any:
        return None
    async def release(self, conn: Any) -> None: ...
    async def execute(self, conn: Any, statement: Statement, params: tuple[object, ...]) -> int:
        return 1
    async def close(self) -> None: ...


def executor_kind(cls: type[Strategy]) -> str:
    """How a strategy's workers run: ``threads`` or ``asyncio``."""
    return "asyncio" if cls.is_async else "threads"


def harness_us_per_op(kind: str, workers: int, on_progress: OnProgress,
                      operations: int = SAMPLE_OPERATIONS, repeats: int = REPEATS) -> float:
    """Microseconds of the run's path per operation, everything but the driver: ``operations``
    spread over ``workers`` threads or tasks (wall time / operations, so it is the cost
    per operation a saturated client pays, GIL contention included), the lowest of
    ``repeats`` measurements on one executor, after :data:`WARMUPS` not counted. Each
    measurement runs from the phase clock's start until every operation is counted (the
    recorders' counting at the phase's end included: with 50 threads, a sample's 400
    operations each are all counted there, where a run's are counted as they go). On
    asyncio no step suspends (a done future returns at once), so the first task runs the
    whole sample: the figure is the loop's own cost per operation, not the event loop's
    switching between tasks, which a driver's awaits cost a bare loop alike."""
    null = AsyncNullStrategy if kind == "asyncio" else NullStrategy
    settings = StrategySettings(target=None, workers=workers, pool_min=0,  # type: ignore[arg-type]
                                pool_max=workers, acquire_timeout_s=float("inf"))
    executor = in_process_executor(null, settings, stop=threading.Event())
    spec = PhaseSpec("read", Statement("read", "", True), RunTable("null", "pb00000000"), 0,
                     count=operations, ids=(1,))
    try:
        executor.open()
        for _ in range(WARMUPS):
            _counted_s(executor, spec, on_progress)
        best = min(_counted_s(executor, spec, on_progress) for _ in range(repeats))
    finally:
        executor.close()
    return round(best / operations * 1e6, 3)


def _counted_s(executor: ThreadExecutor | AsyncioExecutor, spec: PhaseSpec,
               on_progress: OnProgress) -> float:
    """Seconds from the phase clock's start until every operation of the phase is counted."""
    run = executor.run_phase(spec, on_progress)
    return (now_ns() - run.start_ns) / 1e9

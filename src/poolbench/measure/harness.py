"""poolbench's own cost per operation, measured: the same worker loop, clock reads and
recording as a real run, around a strategy that does nothing.

Reported with every run (``harness_us_per_op``), so a reader can see how much of
a latency or a throughput limit is the load generator rather than the pool.
"""

from __future__ import annotations

import threading
from typing import Any

from poolbench.db.workload import Statement, Workload
from poolbench.measure.executor import ThreadExecutor
from poolbench.measure.phase import PhaseSpec
from poolbench.strategies.base import SyncStrategy

SAMPLE_OPERATIONS = 20_000


class NullStrategy(SyncStrategy):
    """A strategy whose every step returns at once (the row check still passes)."""

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


def harness_us_per_op(operations: int = SAMPLE_OPERATIONS) -> float:
    """Microseconds one worker spends per operation on everything but the driver."""
    executor = ThreadExecutor(NullStrategy(None), 1, threading.Event(),  # type: ignore[arg-type]
                              leak_threshold_s=float("inf"))
    spec = PhaseSpec("read", Statement("read", "", True), Workload("null", "pb00000000"), 0,
                     count=operations, ids=(1,))
    try:
        executor.open()
        run = executor.run_phase(spec, lambda n: None)
    finally:
        executor.close()
    return round(run.elapsed_s / operations * 1e6, 3)

"""Proposed executor.py changes, in callgrind instructions per operation with a strategy that
does no I/O (8000 operations each): call_operation as it is and with its success path inline
(no tuple, no _settle call); the worker loop as it is (source.next, w.settle) and fused
(unpaced, not create: the number, deadline and count inline). Run as bench/harness_ir.py
says, with this file (its regions in the order it prints them)."""
import sys
import threading

from poolbench.config import Pace
from poolbench.db.workload import RunTable
from poolbench.measure.executor import PROGRESS_EVERY, _settle, _Worker, call_operation
from poolbench.measure.metrics import PhaseSink, now_ns
from poolbench.strategies.base import SyncStrategy
from poolbench.workloads.phase import PhaseSpec, WorkSource


class Dummy(SyncStrategy):
    name = "dummy"
    driver = "x"
    pooled = True
    per_operation = ""

    def open(self):
        pass

    def close(self):
        pass

    def acquire(self):
        return 1

    def release(self, c):
        pass

    def execute(self, c, s, p):
        return 7

def call_operation_fast(strategy, statement, params, rec, scheduled=None):
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
        rec.record(t0, t1, t2, t3, scheduled)  # the usual case: no tuple, no second call
        return result
    return _settle(statement, result, error, stage, rec, (t0, t1, t2, t3, scheduled))

st = Dummy(None)
workload = RunTable("users", "pb00000000")
statement = workload.statements()["read"]
ids = tuple(range(1, 10001))
N = 8000

def loop_now(op):
    def run(k):
        spec = PhaseSpec("read", statement, workload, 0, count=None, ids=ids,
                         pace=Pace(duration_s=3600))
        source = WorkSource(spec)
        source.start()
        w = _Worker(source, 30.0, {"": PhaseSink()})
        w.start(source.start_ns)
        stop = threading.Event()

        def on_progress(n):
            pass
        n = 0
        while n < k and not stop.is_set() and (item := source.next()) is not None:
            params, scheduled = item
            if scheduled is not None and (delay := scheduled - now_ns()) > 0 \
                    and stop.wait(delay / 1e9):
                break
            w.settle(op(st, statement, params, w.rec, scheduled), on_progress)
            n += 1
    return run

def loop_fused(op):
    """Unpaced, not create: the source's number and deadline inline, the worker's count inline."""
    def run(k):
        spec = PhaseSpec("read", statement, workload, 0, count=None, ids=ids,
                         pace=Pace(duration_s=3600))
        source = WorkSource(spec)
        source.start()
        w = _Worker(source, 30.0, {"": PhaseSink()})
        w.start(source.start_ns)
        stop = threading.Event()

        def on_progress(n):
            pass
        numbers, deadline, count = source._numbers, source.deadline_ns, spec.count
        offset, stride, rows, rec = spec.offset, spec.stride, spec.ids, w.rec
        nrows = len(rows)
        done = 0
        n = 0
        while n < k and not stop.is_set():
            number = offset + next(numbers) * stride
            if (count is not None and number >= count) or \
                    (deadline is not None and now_ns() >= deadline):
                break
            op(st, statement, (rows[number % nrows],), rec, None)
            done += 1
            if done % PROGRESS_EVERY == 0:
                on_progress(PROGRESS_EVERY)
            n += 1
        w.done += done
    return run

for name, fn in (("worker loop now + call_operation now", loop_now(call_operation)),
                 ("worker loop now + call_operation fast", loop_now(call_operation_fast)),
                 ("worker loop fused + call_operation fast", loop_fused(call_operation_fast)),
                 ("worker loop now + call_operation now", loop_now(call_operation)),
                 ("worker loop now + call_operation fast", loop_now(call_operation_fast)),
                 ("worker loop fused + call_operation fast", loop_fused(call_operation_fast))):
    print(name, flush=True)
    sys.call_tracing(fn, (N,))

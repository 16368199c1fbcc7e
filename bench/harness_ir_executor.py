"""poolbench's own work per operation in callgrind instructions, with a strategy that does no
I/O (so only poolbench's code is counted, and the machine's varying speed does not matter):

  worker loop + call_operation   the executor's statement loop as run_phase runs it for a
                                 timed phase (source.next, call_operation, settle), N ops
  run_phase, 1 thread            the executor itself, a phase of N operations (count: no
                                 deadline to check), its worker thread only
  call_operation alone           timing, the strategy's three calls, record
  strategy direct                the strategy's three calls alone
  empty loop, record, source.next, settle    each piece alone (bench/_common.py)

Run (it starts valgrind on itself, the real interpreter, and sums the dumps):
  /tmp/run_bench.sh env PYTHONPATH=$PWD/src python bench/harness_ir_executor.py [N]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

N_DEFAULT = 8000
HERE = Path(__file__).resolve().parent


def regions(n: int) -> None:
    from _common import pieces_alone

    from poolbench.config import Pace
    from poolbench.db.workload import RunTable
    from poolbench.measure.executor import ThreadExecutor, _Worker, call_operation
    from poolbench.measure.metrics import PhaseSink, now_ns
    from poolbench.strategies.base import SyncStrategy
    from poolbench.workloads.phase import PhaseSpec, WorkSource

    class NoIO(SyncStrategy):
        name = "no-io"
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

    def region(name: str, fn, ops: int) -> None:
        print(f"{name}\t1\t{ops}", flush=True)
        sys.call_tracing(fn, (ops,))

    st = NoIO(None)
    workload = RunTable("users", "pb00000000")
    statement = workload.statements()["read"]
    ids = tuple(range(1, 10001))
    timed = Pace(duration_s=3600)

    def worker_loop(k: int) -> None:
        """run_phase's statement worker, stopped after k operations."""
        source = WorkSource(PhaseSpec("read", statement, workload, 0, count=None, ids=ids,
                                      pace=timed))
        source.start()
        w = _Worker(source, 30.0, {"": PhaseSink()})
        w.start(source.start_ns)
        stop = threading.Event()

        def on_progress(m):
            pass
        done = 0
        while done < k and not stop.is_set() and (item := source.next()) is not None:
            params, scheduled = item
            if scheduled is not None and (delay := scheduled - now_ns()) > 0 \
                    and stop.wait(delay / 1e9):
                break
            w.settle(call_operation(st, statement, params, w.rec, scheduled), on_progress)
            done += 1
        w.rec.finish()

    def call_alone(k: int) -> None:
        source = WorkSource(PhaseSpec("read", statement, workload, 0, count=None, ids=ids))
        rec = _Worker(source, 30.0, {"": PhaseSink()}).rec
        rec.origin_ns = now_ns()
        params = (1,)
        for _ in range(k):
            call_operation(st, statement, params, rec, None)
        rec.finish()

    def strategy_direct(k: int) -> None:
        params = (1,)
        for _ in range(k):
            c = st.acquire()
            st.execute(c, statement, params)
            st.release(c)

    region("worker loop + call_operation", worker_loop, n)
    ex = ThreadExecutor(st, 1, threading.Event(), 30.0)
    ex.open()
    pool = ex._threads
    submit = pool.submit
    pool.submit = lambda fn: submit(lambda: sys.call_tracing(fn, ()))
    print(f"run_phase, 1 thread\t1\t{n}", flush=True)
    ex.run_phase(PhaseSpec("read", statement, workload, 0, count=n, ids=ids), lambda m: None)
    pool.submit = submit
    ex.close()
    region("call_operation alone", call_alone, n)
    region("strategy direct", strategy_direct, n)
    fns = pieces_alone(workload, ids)
    for name in ("empty loop", "record", "source.next", "settle"):
        region(name, fns[name], n)


def main(n: int) -> None:
    sys.path.insert(0, str(HERE))
    from harness_ir import summarise

    with tempfile.TemporaryDirectory() as folder:
        with open(f"{folder}/regions.txt", "w") as out:
            subprocess.run(
                ["valgrind", "--tool=callgrind", "--collect-atstart=no",
                 "--toggle-collect=sys_call_tracing", "--dump-after=sys_call_tracing",
                 "--dump-instr=no", f"--callgrind-out-file={folder}/cg.out",
                 sys.executable, __file__, "--regions", str(n)],
                stdout=out, stderr=subprocess.DEVNULL, check=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(
                    [str(HERE), os.environ.get("PYTHONPATH", "")])})
        summarise(folder)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--regions"]:
        sys.path.insert(0, str(HERE))
        regions(int(sys.argv[2]))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else N_DEFAULT)

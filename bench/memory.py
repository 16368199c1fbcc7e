"""Peak RSS of a real run's hot path after 10,000 and after 1,000,000 operations.

Each size runs in a fresh process: psycopg:pool, 8 worker threads, point reads
of 1,000 rows through the same executor and recorders as `poolbench run`.
Run: python bench/memory.py
"""

from __future__ import annotations

import resource
import subprocess
import sys
import threading

from _common import Report

SIZES = (10_000, 1_000_000)


def child(operations: int) -> None:
    from poolbench.check.calibrate import create_rows
    from poolbench.db.admin import AdminSession
    from poolbench.db.server import EmbeddedServer
    from poolbench.db.workload import RunTable, delete_own_rows, ensure_table, new_run_tag
    from poolbench.measure.executor import ThreadExecutor
    from poolbench.strategies import StrategySettings, load_strategy
    from poolbench.workloads.phase import PhaseSpec

    with EmbeddedServer(max_connections=50) as server:
        admin = AdminSession(server.target)
        admin.call(lambda c: ensure_table(c, "users"))
        workload = RunTable("users", new_run_tag())
        first, last = create_rows(admin, workload, 1000)
        settings = StrategySettings(target=server.target, workers=8, pool_min=8, pool_max=8,
                                    acquire_timeout_s=30)
        executor = ThreadExecutor(load_strategy("psycopg:pool")(settings), 8, threading.Event(),
                                  30.0)
        spec = PhaseSpec("read", workload.statements()["read"], workload, 0, count=operations,
                         ids=tuple(range(first, last + 1)))
        executor.open()
        run = executor.run_phase(spec, lambda n: None)
        executor.close()
        admin.call(lambda c: delete_own_rows(c, "users", workload.prefix))
        admin.close()
    ops = sum(r.ok for r in run.recorders)
    print(ops, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
        return
    report = Report("memory")
    peaks = {}
    for size in SIZES:
        out = subprocess.run([sys.executable, __file__, "--child", str(size)], check=True,
                             capture_output=True, text=True).stdout.split()
        ops, kib = int(out[-2]), int(out[-1])
        peaks[size] = kib / 1024
        report.line(f"{ops:>9,} operations: peak RSS {peaks[size]:.1f} MB")
    growth = peaks[SIZES[1]] - peaks[SIZES[0]]
    report.line(f"growth from {SIZES[0]:,} to {SIZES[1]:,} operations: {growth:.1f} MB "
                "(target < 50 MB)")
    report.save()


if __name__ == "__main__":
    main()

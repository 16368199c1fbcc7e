"""poolbench's read throughput and connect cost against pgbench's, on one embedded server.

Prints: pgbench point-read tps at 8 clients vs each pooled strategy's read
throughput at 8 workers (and the best with --processes 2); psycopg2:none's
connect time vs pgbench -C; poolbench's own microseconds per operation.
Run: python bench/overhead.py [seconds per measurement, default 5]
"""

from __future__ import annotations

import random
import sys
import time

from _common import Report

from poolbench import RunConfig, run
from poolbench.check.calibrate import create_rows, find_pgbench, run_pgbench, scripts
from poolbench.db.admin import AdminSession
from poolbench.db.server import EmbeddedServer
from poolbench.db.workload import RunTable, delete_own_rows, ensure_table, new_run_tag
from poolbench.measure.harness import harness_us_per_op
from poolbench.measure.metrics import COUNT_OPERATIONS, OperationRecorder, PhaseSink, now_ns

CLIENTS = 8
POOLED = ("psycopg:pool", "asyncpg:pool", "psycopg2:threaded")


def read_throughput(target, strategy: str, seconds: float, processes: int = 1) -> float:
    results = run(RunConfig(target=target, strategies=(strategy,), rows=1, workers=CLIENTS,
                            pool_min=CLIENTS, pool_max=CLIENTS, warmup=0, trials=1,
                            duration_s=seconds, processes=processes, out_dir=None))
    return results.strategies[0].phase("read").throughput_ops_s


def counting_us_per_op(operations: int = 4 * COUNT_OPERATIONS) -> float:
    """µs per operation of counting kept clock readings (what a worker pays once it has kept
    COUNT_OPERATIONS, and at each phase's end after its clock stops), best of 5: read
    latencies spread over 60-600 µs, one second after another, into a phase's sink."""
    rng = random.Random(1)
    base = now_ns()
    ops = []
    for n in range(operations):
        t0 = base + n * 30_000
        t1 = t0 + rng.randint(1_000, 20_000)
        t2 = t1 + rng.randint(50_000, 500_000)
        ops.append((t0, t1, t2, t2 + rng.randint(5_000, 80_000)))
    best = float("inf")
    for _ in range(5):
        rec = OperationRecorder(30.0, "", PhaseSink())
        rec.origin_ns = base
        for op in ops:
            rec.record(*op)  # counted every COUNT_OPERATIONS, below
        rec.times.clear()
        rec.packed.clear()
        rec.ok = 0
        spent = 0
        for start in range(0, operations, COUNT_OPERATIONS):
            for op in ops[start:start + COUNT_OPERATIONS - 1]:
                rec.record(*op)
            t = time.perf_counter()
            rec.record(*ops[start + COUNT_OPERATIONS - 1])  # the one that counts them
            spent += time.perf_counter() - t
        assert rec.ok == operations
        best = min(best, spent)
    return best / operations * 1e6


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    report = Report("overhead")
    with EmbeddedServer(max_connections=100) as server:
        target = server.target
        admin = AdminSession(target)
        admin.call(lambda c: ensure_table(c, "users"))
        workload = RunTable("users", new_run_tag())
        first, last = create_rows(admin, workload, 10_000)
        texts = scripts(workload, first, last)
        pgbench = find_pgbench()
        ref = run_pgbench(pgbench, target, texts["read"], "read", clients=CLIENTS,
                          seconds=seconds, connect_each=False)
        ref_c = run_pgbench(pgbench, target, texts["read"], "read", clients=CLIENTS,
                            seconds=seconds, connect_each=True)
        admin.call(lambda c: delete_own_rows(c, "users", workload.prefix))
        report.line(f"pgbench read, {CLIENTS} clients, persistent: {ref.tps:,.0f} tps")
        best = 0.0
        for strategy in POOLED:
            tps = read_throughput(target, strategy, seconds)
            best = max(best, tps)
            report.line(f"  {strategy:<18} read {tps:>9,.0f} ops/s = {tps / ref.tps:.2f}x pgbench")
        for strategy in POOLED:
            tps = read_throughput(target, strategy, seconds, processes=2)
            best = max(best, tps)
            report.line(f"  {strategy:<18} read {tps:>9,.0f} ops/s = {tps / ref.tps:.2f}x "
                        "pgbench (--processes 2)")
        report.line(f"best pooled read: {best / ref.tps:.2f}x pgbench (target >= 0.8x)")
        results = run(RunConfig(target=target, strategies=("psycopg2:none",), rows=1000,
                                workers=CLIENTS, warmup=0, trials=1, out_dir=None))
        connect_ms = results.strategies[0].phase("read").acquire.mean_us / 1000
        report.line(f"pgbench -C, {CLIENTS} clients: {ref_c.connection_ms:.2f} ms per connection; "
              f"psycopg2:none: {connect_ms:.2f} ms = {connect_ms / ref_c.connection_ms:.2f}x "
              "(target within 1.15x)")
        admin.close()
    for kind in ("threads", "asyncio"):
        for workers in (1, CLIENTS, 50):
            own = min(harness_us_per_op(kind, workers, lambda n: None) for _ in range(5))
            report.line(f"poolbench's own work, {kind}, {workers} workers: {own:.2f} µs per "
                        "operation, best of 5 (target <= 2)")
    report.line(f"counting kept operations: {counting_us_per_op():.2f} µs per operation, best "
                f"of 5, on latencies spread over 60-600 µs (paid by a worker each "
                f"{COUNT_OPERATIONS:,} operations, and at each phase's end: the own-work lines "
                "above count until every operation is counted, so they include it, on the null "
                "strategy's latencies, all alike)")
    report.save()


if __name__ == "__main__":
    main()

"""poolbench's read throughput and connect cost against pgbench's, on one embedded server.

Prints: pgbench point-read tps at 8 clients vs each pooled strategy's read
throughput at 8 workers (and the best with --processes 2); psycopg2:none's
connect time vs pgbench -C; poolbench's own microseconds per operation, in interleaved
rounds, each configuration's median with its bootstrap interval.
Run: python bench/overhead.py [seconds per measurement, default 5] [own-work rounds,
default 15]
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from _common import Report, interval_verdict

from poolbench import RunConfig, run
from poolbench.analysis.intervals import RESAMPLES, median_interval
from poolbench.check.calibrate import create_rows, find_pgbench, run_pgbench, scripts
from poolbench.db.admin import AdminSession
from poolbench.db.server import EmbeddedServer
from poolbench.db.workload import RunTable, delete_own_rows, ensure_table, new_run_tag
from poolbench.measure.harness import REPEATS, SAMPLE_OPERATIONS, WARMUPS, harness_us_per_op
from poolbench.measure.metrics import COUNT_OPERATIONS, OperationRecorder, PhaseSink, now_ns

CLIENTS = 8
OWN_ROUNDS = 15
OWN_WORKERS = (1, CLIENTS, 50)
OWN_TARGET_US = 2.0
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


def reference_loop_ns(iterations: int = 200_000) -> float:
    """ns per iteration of a pure-Python loop (``x += i``): how fast this machine runs
    Python at the moment, beside each round of own-work measurements."""
    t = time.perf_counter_ns()
    x = 0
    for i in range(iterations):
        x += i
    return (time.perf_counter_ns() - t) / iterations


def own_work(report: Report, rounds: int = OWN_ROUNDS) -> None:
    """poolbench's own work per operation (harness_us_per_op, exactly the figure a run
    prints: best of its repeats after a warm-up), in ``rounds`` rounds, each measuring every
    executor kind and worker count once in a fresh random order, so that this machine's
    changes of speed (tens of percent, lasting about a second) fall on all of them alike.
    Per configuration: the median over the rounds with its 95% percentile-bootstrap
    interval, and the lowest and highest; and per round the figure at 50 workers over the
    figure at 8, paired, the same way."""
    configs = [(kind, workers) for kind in ("threads", "asyncio") for workers in OWN_WORKERS]
    figures: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    speed = []
    rng = random.Random(0)
    for _ in range(rounds):
        speed.append(reference_loop_ns())
        for kind, workers in rng.sample(configs, len(configs)):
            figures[kind, workers].append(harness_us_per_op(kind, workers, lambda n: None))
    report.line(f"poolbench's own work per operation: {rounds} rounds, each measuring every "
                "configuration below once, in a fresh random order; each figure is what a run "
                f"prints (best of {REPEATS} after {WARMUPS} warm-up, {SAMPLE_OPERATIONS:,} "
                "operations); given: the median over the rounds with its 95% "
                f"percentile-bootstrap interval (scipy.stats.bootstrap, {RESAMPLES:,} "
                "resamples, seed 0), the lowest and the highest")
    report.line(f"this machine's speed meanwhile: a pure-Python loop took {min(speed):.0f} to "
                f"{max(speed):.0f} ns per iteration (median {statistics.median(speed):.0f}), "
                "measured before each round")
    for kind, workers in configs:
        found = figures[kind, workers]
        iv = median_interval(found)
        report.line(f"poolbench's own work, {kind}, {workers} workers: {iv.value:.2f} µs per "
                    f"operation, 95% interval {iv.low:.2f}..{iv.high:.2f} (lowest "
                    f"{min(found):.2f}, highest {max(found):.2f}); target <= {OWN_TARGET_US:g}: "
                    f"{interval_verdict(iv, OWN_TARGET_US, at_most=True)}")
    for kind in ("threads", "asyncio"):
        iv = median_interval([a / b for a, b in zip(figures[kind, 50], figures[kind, CLIENTS])])
        report.line(f"  {kind}: 50 workers / {CLIENTS} workers, paired by round: {iv.value:.2f}x, "
                    f"95% interval {iv.low:.2f}..{iv.high:.2f}")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else OWN_ROUNDS
    if rounds < 2:
        raise SystemExit("overhead: own-work rounds must be 2 or more (an interval needs two)")
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
    own_work(report, rounds)
    report.line(f"counting kept operations: {counting_us_per_op():.2f} µs per operation, best "
                f"of 5, on latencies spread over 60-600 µs (paid by a worker each "
                f"{COUNT_OPERATIONS:,} operations, and at each phase's end: the own-work lines "
                "above count until every operation is counted, so they include it, on the null "
                "strategy's latencies, all alike)")
    report.save()


if __name__ == "__main__":
    main()

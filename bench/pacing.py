"""How closely ``--rate`` is held, and how together ``--processes`` start: timing claims the
tests leave to this script (tests/test_pacing.py checks the schedule the code computes and
the start instant each process takes; how late the machine runs them is measured here).

Prints, per strategy and phase: the throughput against the rate asked for, the phase's
length against the last operation's due time, and the gap between latency from the
scheduled start and from the actual start (p50 and p99; near zero when operations start
when due, large after a start-up burst). Then, for two processes, how long after the named
instant each process's clock started, over several phases.
Targets: throughput within 5% of the rate; scheduled minus actual p50 under 2 ms, p99 under
20 ms; every process started within 20 ms of the named instant.
Run: python bench/pacing.py [seconds per phase, default 3] [rounds of the start barrier, 10]
"""

from __future__ import annotations

import sys
import threading

from _common import Report

from poolbench import RunConfig, run
from poolbench.config import Pace
from poolbench.db.admin import AdminSession
from poolbench.db.server import EmbeddedServer
from poolbench.db.workload import RunTable, delete_own_rows, ensure_table, new_run_tag
from poolbench.measure.processes import ProcessExecutor
from poolbench.strategies import StrategySettings, load_strategy
from poolbench.workloads.phase import PhaseSpec

RATE = 400.0
STRATEGIES = ("psycopg:pool", "asyncpg:pool")


def held_rates(report: Report, target, seconds: float, processes: int) -> None:
    report.line(f"--rate {RATE:g} for {seconds:g} s, 4 workers, pools of 4, "
                f"--processes {processes}")
    results = run(RunConfig(target=target, strategies=STRATEGIES, rows=1, workers=4,
                            pool_max=4, warmup=0, trials=1, table="users", out_dir=None,
                            rate=RATE, duration_s=seconds, processes=processes))
    last_due = (int(RATE * seconds) - 1) / RATE
    for s in results.strategies:
        for p in s.phases[:3]:
            assert p.scheduled is not None
            report.line(
                f"  {s.name:<14} {p.phase:<7} {p.throughput_ops_s:>6.1f} ops/s = "
                f"{p.throughput_ops_s / RATE:.3f}x the rate; lasted {p.median_s:.3f} s "
                f"(last due {last_due:.4f} s); scheduled - actual: p50 "
                f"{(p.scheduled.p50_us - p.latency.p50_us) / 1000:.2f} ms, p99 "
                f"{(p.scheduled.p99_us - p.latency.p99_us) / 1000:.2f} ms")


def start_spread(report: Report, target, workload: RunTable, rounds: int) -> None:
    """Two processes behind the start barrier: each one's clock start after the instant
    the parent named (zero when it learned it in time)."""
    settings = StrategySettings(target=target, workers=4, pool_min=4, pool_max=4,
                                acquire_timeout_s=30.0)
    executor = ProcessExecutor(load_strategy("psycopg:pool"), settings, processes=2,
                               stop=threading.Event())
    late_ms: list[float] = []
    try:
        executor.open()
        for trial in range(rounds):  # a trial each: its rows' names are its own
            spec = PhaseSpec.of("create", workload.statements()["create"], workload, trial,
                                rows=50, ids=(), pace=Pace(rate=RATE))
            phase = executor.run_phase(spec, lambda advance: None)
            assert phase.named_start_ns is not None
            late_ms += [(s - phase.named_start_ns) / 1e6 for s in phase.starts_ns]
    finally:
        executor.close()
    late_ms.sort()
    report.line(f"start barrier, 2 processes, {rounds} phases: clock start after the named "
                f"instant: median {late_ms[len(late_ms) // 2]:.2f} ms, max {late_ms[-1]:.2f} ms"
                f" over {len(late_ms)} starts (a process that sleeps until the instant wakes "
                "a little after it)")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    report = Report("pacing")
    with EmbeddedServer(max_connections=40) as server:
        target = server.target
        for processes in (1, 2):
            held_rates(report, target, seconds, processes)
        admin = AdminSession(target)
        workload = RunTable("users", new_run_tag())
        try:
            admin.call(lambda c: ensure_table(c, "users"))
            start_spread(report, target, workload, rounds)
        finally:
            admin.call(lambda c: delete_own_rows(c, "users", workload.prefix))
            admin.close()
    report.save()


if __name__ == "__main__":
    main()

"""App pool, PgBouncer, or both: one embedded server, 64 clients, the same workload.

For each configuration: read and update throughput, read p99, and the most server
backends the benchmark held at once (sampled from pg_stat_activity every 10 ms).
Run: python bench/poolers.py [seconds per phase, default 3]
"""

from __future__ import annotations

import sys
import threading

import psycopg
from _common import Report

from poolbench import RunConfig, run
from poolbench.db.server import EmbeddedServer

CLIENTS = 64
CONFIGS = (("psycopg:none", "direct"), ("psycopg:none", "pgbouncer:transaction"),
           ("psycopg:pool", "direct"), ("psycopg:pool", "pgbouncer:transaction"),
           ("sqlalchemy:queuepool", "direct"), ("asyncpg:pool", "pgbouncer:transaction"))
POOL = 16  # app pools and PgBouncer's default_pool_size alike


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    report = Report("poolers")
    report.line(f"{CLIENTS} clients, pools of {POOL} (app pool min = max; PgBouncer "
                f"default_pool_size {POOL}), {seconds:.0f} s per phase")
    report.line(f"{'configuration':<40} {'read ops/s':>11} {'update ops/s':>13} "
                f"{'read p99 ms':>12} {'backends max':>13}")
    with EmbeddedServer(max_connections=120) as server:
        target = server.target
        for strategy, route in CONFIGS:
            seen: list[int] = []
            stop = threading.Event()

            def watch(seen: list[int] = seen, stop: threading.Event = stop) -> None:
                with psycopg.connect(target.with_params(application_name="bench").conninfo(),
                                     autocommit=True) as conn:
                    while not stop.wait(0.01):
                        seen.append(conn.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                            "'poolbench' AND backend_type = 'client backend'").fetchone()[0])

            thread = threading.Thread(target=watch)
            thread.start()
            try:
                results = run(RunConfig(target=target, strategies=(strategy,), rows=1,
                                        workers=CLIENTS, pool_min=POOL, pool_max=POOL,
                                        warmup=0, trials=1, duration_s=seconds, out_dir=None,
                                        via=(route,)))
            finally:
                stop.set()
                thread.join()
            s = results.strategies[0]
            read, update = s.phase("read"), s.phase("update")
            report.line(f"{s.name:<40} {read.throughput_ops_s:>11,.0f} "
                        f"{update.throughput_ops_s:>13,.0f} {read.latency.p99_us / 1000:>12.2f} "
                        f"{max(seen, default=0):>13}"
                        + (f"  ({s.error_count} failed)" if s.error_count else ""))
    report.save()


if __name__ == "__main__":
    main()

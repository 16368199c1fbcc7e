"""The seed's job (1000 rows, 50 workers, create/read/update/delete) two ways, one server.

1. The seed's pooled design: psycopg2 ThreadedConnectionPool(1, 50), transactions
   committed after writes and left open by reads (putconn rolls them back).
2. poolbench's best pooled strategy for the same job (fastest of psycopg:pool,
   asyncpg:pool, psycopg2:threaded; one trial, no warm-up, like the seed).
Prints total seconds of the four phases and the ratio.
Run: python bench/seed_job.py
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2.pool
from _common import Report

from poolbench import RunConfig, run
from poolbench.db.server import EmbeddedServer
from poolbench.db.workload import RunTable, delete_own_rows, ensure_table, new_run_tag

ROWS, WORKERS = 1000, 50


def seed_design(conninfo: str, workload: RunTable) -> float:
    pool = psycopg2.pool.ThreadedConnectionPool(1, 50, conninfo)
    sql = workload.statements()

    def op(phase: str, params: tuple) -> object:
        conn = pool.getconn()
        try:
            with conn.cursor() as cur:
                cur.execute(sql[phase].sql, params)
                row = cur.fetchone() if sql[phase].returns_row else None
            if phase != "read":
                conn.commit()  # the seed commits writes; reads leave the transaction open
            return row
        finally:
            pool.putconn(conn)

    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as threads:
        ids = [r[0] for r in threads.map(lambda p: op("create", p),
                                         workload.create_params(0, ROWS))]
        list(threads.map(lambda i: op("read", (i,)), ids))
        list(threads.map(lambda p: op("update", p), workload.update_params(0, ids)))
        list(threads.map(lambda i: op("delete", (i,)), ids))
    total = time.perf_counter() - started
    pool.closeall()
    return total


def main() -> None:
    report = Report("seed_job")
    with EmbeddedServer(max_connections=120) as server:
        import psycopg

        with psycopg.connect(server.target.conninfo(), autocommit=True) as conn:
            ensure_table(conn, "users")
            workload = RunTable("users", new_run_tag())
            seed_s = seed_design(server.target.conninfo(), workload)
            delete_own_rows(conn, "users", workload.prefix)
        results = run(RunConfig(target=server.target, rows=ROWS, workers=WORKERS, warmup=0,
                                trials=1, out_dir=None,
                                strategies=("psycopg:pool", "asyncpg:pool",
                                            "psycopg2:threaded")))
    best = min(results.strategies, key=lambda s: s.total_median_s)
    report.line(f"seed's design (ThreadedConnectionPool, open read transactions): {seed_s:.2f} s")
    for s in results.strategies:
        report.line(f"  poolbench {s.name:<18} {s.total_median_s:.2f} s")
    report.line(f"best ({best.name}) is {seed_s / best.total_median_s:.1f}x faster "
                "(target >= 10x)")
    report.save()


if __name__ == "__main__":
    main()

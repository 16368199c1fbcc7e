"""The fault suite's figures: every strategy while a killer terminates every benchmark
backend every 100 ms, over a table of 10,000 rows that are not poolbench's.

Prints backends killed, operations attempted and failed (by class), rows of the run
left, and whether the other rows are byte-identical afterwards.
Run: python bench/faults.py
"""

from __future__ import annotations

import threading
from collections import Counter

import psycopg
from _common import Report

from poolbench import RunConfig, run
from poolbench.db.server import EmbeddedServer
from poolbench.strategies import REGISTRY

SEED_ROWS = 10_000


def main() -> None:
    report = Report("faults")
    with EmbeddedServer(max_connections=100) as server:
        target = server.target
        admin = psycopg.connect(target.with_params(application_name="bench-admin").conninfo(),
                                autocommit=True)
        admin.execute("CREATE TABLE users (id SERIAL PRIMARY KEY, username VARCHAR(50) UNIQUE "
                      "NOT NULL, email VARCHAR(100) UNIQUE NOT NULL, created_at TIMESTAMP WITH "
                      "TIME ZONE DEFAULT NOW())")
        admin.execute("INSERT INTO users (username, email) SELECT 'user' || g, 'user' || g || "
                      "'@example.com' FROM generate_series(1, %s) g", (SEED_ROWS,))
        before = admin.execute("SELECT * FROM users ORDER BY id").fetchall()
        stop, killed = threading.Event(), Counter()

        def killer() -> None:
            with psycopg.connect(target.with_params(application_name="bench-killer").conninfo(),
                                 autocommit=True) as conn:
                while not stop.wait(0.1):
                    killed["backends"] += conn.execute(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM "
                        "pg_stat_activity WHERE application_name = 'poolbench'").fetchone()[0]

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            results = run(RunConfig(target=target, strategies=tuple(REGISTRY), rows=300,
                                    workers=8, warmup=0, trials=1, out_dir=None))
        finally:
            stop.set()
            thread.join()
        after = admin.execute("SELECT * FROM users ORDER BY id").fetchall()
        left = admin.execute("SELECT count(*) FROM users WHERE username LIKE 'pb%'").fetchone()[0]
        admin.close()
    attempts = failed = 0
    for s in results.strategies:
        errors: Counter[str] = Counter()
        for p in s.phases:
            errors.update(p.errors)
            attempts += p.ops + p.error_count
            failed += p.error_count
        report.line(f"  {s.name:<18} failed {sum(errors.values()):>4}: "
                    + ", ".join(f"{k}×{v}" for k, v in errors.most_common(3)))
    report.line(f"backends killed: {killed['backends']}; operations: {attempts:,}, failed and "
                f"counted: {failed:,}; rows of the run left: {left}; other rows "
                f"{'byte-identical' if after == before else 'CHANGED'} ({len(after):,})")
    report.save()


if __name__ == "__main__":
    main()

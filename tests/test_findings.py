"""Each finding fires in a situation built on the real server, and a clean run has none."""

from __future__ import annotations

import threading
import time

import psycopg
import psycopg2.pool

from poolbench import RunConfig, run
from poolbench.analysis.findings import activity_findings
from poolbench.db.target import ConnectionTarget
from poolbench.db.workload import quote_ident
from poolbench.events import RunEvents
from poolbench.measure.sampler import Sampler


def rules(results, strategy: str | None = None) -> set[str]:
    return {f.rule for f in results.findings if strategy is None or f.strategy == strategy}


def test_clean_run_has_no_finding(target: ConnectionTarget, table: str) -> None:
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=1, workers=4,
                            pool_min=4, pool_max=4, warmup=0, trials=1, table=table,
                            out_dir=None, rate=100.0, duration_s=1.0))
    assert results.strategies[0].activity is not None
    assert results.findings == (), results.findings


def test_pool_churn_and_pool_too_small(target: ConnectionTarget, table: str) -> None:
    # psycopg2's pool closes what it gets back above minconn: churn.
    churn = run(RunConfig(target=target, strategies=("psycopg2:threaded",), rows=300,
                          workers=8, pool_min=1, pool_max=2, warmup=0, trials=1, table=table,
                          out_dir=None))
    assert "pool churn" in rules(churn)
    # 16 workers, 2 connections, a 2-core server with room to spare: the wait dominates.
    small = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=1, workers=16,
                          pool_min=2, pool_max=2, warmup=0, trials=1, table=table,
                          out_dir=None, duration_s=1.5))
    assert "pool too small" in rules(small)


def test_connect_bound_no_pool(target: ConnectionTarget, table: str) -> None:
    results = run(RunConfig(target=target, strategies=("psycopg2:none",), rows=200, workers=4,
                            warmup=0, trials=1, table=table, out_dir=None))
    assert "connect-bound" in rules(results)


def test_client_bound_when_one_python_process_saturates(target: ConnectionTarget,
                                                        table: str) -> None:
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=1, workers=8,
                            pool_min=8, pool_max=8, warmup=0, trials=1, table=table,
                            out_dir=None, duration_s=1.5))
    assert "client-bound" in rules(results), [
        (s.activity.client_cpu_s, s.activity.server_cpu_s, s.activity.seconds)
        for s in results.strategies]


def test_near_max_connections(target: ConnectionTarget, table: str) -> None:
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=200, workers=100,
                            pool_min=100, pool_max=100, warmup=0, trials=1, table=table,
                            out_dir=None))
    assert "near max_connections" in rules(results)


def test_lock_contention_from_a_held_lock(target: ConnectionTarget, admin: psycopg.Connection,
                                          table: str) -> None:
    """Another session holds an exclusive lock on the table for a second mid-phase."""
    events = RunEvents()
    done = threading.Event()

    def hold(**_: object) -> None:
        def body() -> None:
            with psycopg.connect(target.with_params(application_name="locker").conninfo()) as c:
                c.execute(f"LOCK TABLE {quote_ident(table)} IN ACCESS EXCLUSIVE MODE")
                time.sleep(1.0)  # the lock is held for this long: the situation under test
                c.rollback()
            done.set()
        if not done.is_set() and not getattr(hold, "started", False):
            hold.started = True  # type: ignore[attr-defined]
            threading.Thread(target=body, daemon=True).start()

    events.phase_started.add_listener(
        lambda phase, **kw: hold() if phase == "read" else None)
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=1, workers=4,
                            pool_min=4, pool_max=4, warmup=0, trials=1, table=table,
                            out_dir=None, duration_s=1.5), events=events)
    assert done.wait(10)
    assert "lock contention" in rules(results), results.strategies[0].activity


def test_idle_in_transaction_in_the_seeds_pooled_design(target: ConnectionTarget,
                                                        admin: psycopg.Connection,
                                                        table: str) -> None:
    """The seed's design: a psycopg2 pool whose reads leave their transaction open."""
    admin.execute(f"CREATE TABLE {quote_ident(table)} (id int PRIMARY KEY)")
    admin.execute(f"INSERT INTO {quote_ident(table)} SELECT generate_series(1, 100)")
    app = target.with_params(application_name="seed-app")
    pool = psycopg2.pool.ThreadedConnectionPool(4, 4, app.conninfo())
    sampler = Sampler(target, ("seed-app",), 0.05)
    try:
        sampler.start()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            conn = pool.getconn()
            with conn.cursor() as cur:
                cur.execute(f"SELECT * FROM {quote_ident(table)} WHERE id = 1")  # no commit
            pool.putconn(conn)  # psycopg2 rolls back only when the pool closes it
        summary = sampler.stop()
    finally:
        sampler.close()
        pool.closeall()
    assert {f.rule for f in activity_findings("seed design", summary)} == {"idle in transaction"}

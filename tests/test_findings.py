"""Each finding fires in a situation built on the real server, and a clean run has none."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

import psycopg
import psycopg2.pool
import pytest

from poolbench import RunConfig, run
from poolbench.analysis.findings import activity_findings, findings, sweep_findings
from poolbench.db.target import ConnectionTarget
from poolbench.db.workload import quote_ident
from poolbench.events import RunEvents
from poolbench.measure.sampler import SAMPLER_APPLICATION_NAME, Sampler
from poolbench.results import (
    SCHEMA_VERSION,
    ActivitySummary,
    Finding,
    LatencySummary,
    PhaseResult,
    RunResults,
    StrategyResult,
)


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
                            warmup=0, trials=1, table=table, out_dir=None, connect_samples=1))
    assert "connect-bound" in rules(results)


@pytest.mark.parametrize(("client_cpu_s", "server_cpu_s", "fires"), [
    (9.0, 3.0, True),  # the client process at 90% of a core, the server at 30% of 2 cores
    (9.0, 15.0, False),  # the server busy too (150% of 2 cores): not the client's limit
    (4.0, 3.0, False),  # the client at 40%: not saturated
])
def test_client_bound_when_one_python_process_saturates(client_cpu_s: float,
                                                        server_cpu_s: float,
                                                        fires: bool) -> None:
    """Known answers over 10 s of one client process on a 2-core server. (A real run's CPU
    shares depend on what else the machine runs: the rule is tested on its inputs.)"""
    activity = replace(_activity({"CPU": 1.0}, 1.0), seconds=10.0, client_cpu_s=client_cpu_s,
                       server_cpu_s=server_cpu_s)
    strategy = StrategyResult(name="psycopg:pool", pooled=True, is_async=False,
                              per_operation="", open_s=0.0, phases=(), stats={},
                              leftover_rows_deleted=0, activity=activity)
    results = RunResults(schema_version=SCHEMA_VERSION, run_tag="pb00000000", partial=False,
                         started_at="", finished_at="", environment={},
                         config={"pool_max": 8, "pool_min": 8, "processes": 1},
                         strategies=(strategy,), comparison=None, verification=None)
    assert ("client-bound" in rules(replace(results, findings=findings(
        results, server_cores=2)))) is fires


def test_near_max_connections(target: ConnectionTarget, table: str) -> None:
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=200, workers=100,
                            pool_min=100, pool_max=100, warmup=0, trials=1, table=table,
                            out_dir=None))
    assert "near max_connections" in rules(results)


def test_lock_contention_from_a_held_lock(target: ConnectionTarget, admin: psycopg.Connection,
                                          table: str) -> None:
    """Another session takes an exclusive lock on the table as the read phase starts, and
    keeps it until the run's four workers all wait on it and the activity sampler has
    looked at them ten times: those samples are Lock waits, by construction, and the other
    phases (20 rows each) are too short to outweigh them."""
    events = RunEvents()
    locker: list[psycopg.Connection] = []
    looks: list[object] = []
    released = threading.Event()

    def waiting_on_the_lock() -> int:
        return admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'poolbench' "
            "AND wait_event_type = 'Lock'").fetchone()[0]

    def sampler_looked() -> tuple[object, str]:  # its latest look: when it began, its state
        return admin.execute("SELECT query_start, state FROM pg_stat_activity WHERE "
                             "application_name = %s", (SAMPLER_APPLICATION_NAME,)).fetchone()

    def release() -> None:
        # A deadline only a hang reaches; the looks between are polls, not the wait itself.
        deadline = time.monotonic() + 120
        try:
            while waiting_on_the_lock() < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            seen = sampler_looked()[0]  # a look begun before may not have seen them all
            while len(looks) < 10 and time.monotonic() < deadline:
                began, state = sampler_looked()
                if began != seen and state == "idle":  # a look begun since, and finished
                    looks.append(began)
                    seen = began
                time.sleep(0.01)
        finally:
            locker[0].rollback()
            released.set()

    def hold(phase: str, **_: object) -> None:
        if phase != "read" or locker:
            return
        conn = psycopg.connect(target.with_params(application_name="locker").conninfo())
        locker.append(conn)
        conn.execute(f"LOCK TABLE {quote_ident(table)} IN ACCESS EXCLUSIVE MODE")
        threading.Thread(target=release, daemon=True).start()  # the phase runs meanwhile

    events.phase_started.add_listener(hold)
    try:
        results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=20,
                                workers=4, pool_min=4, pool_max=4, warmup=0, trials=1,
                                table=table, out_dir=None), events=events)
    finally:
        released.wait(180)
        for conn in locker:
            conn.close()
    assert len(looks) == 10, "the sampler never looked at the workers waiting on the lock"
    activity = results.strategies[0].activity
    assert activity is not None and activity.wait_events.get("Lock:relation", 0) >= 40, \
        activity
    assert "lock contention" in rules(results), activity


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


def _point(size: int, ops_s: float, p99_us: int, active: int, waits: dict[str, float],
           found: tuple[Finding, ...] = (), strategy: str = "psycopg:pool"):
    from poolbench.analysis.sweep import SweepPoint

    summary = LatencySummary(100, p99_us / 2, p99_us // 2, p99_us, p99_us, p99_us)
    return SweepPoint(strategy=strategy, pool_size=size, workers=16, throughput_ops_s=ops_s,
                      latency=summary, acquire=summary, execute=summary, errors=0,
                      server_ok=True, run_tag="pb00000000", active_max=active,
                      active_median=active, wait_shares=waits, idle_in_transaction_share=0.0,
                      findings=found)


@pytest.mark.parametrize(("waits", "rule", "queue", "fix"), [
    ({"Lock": 0.93, "CPU": 0.07}, "lock contention", "a heavyweight lock",
     "shorten the transactions that hold it"),
    ({"CPU": 0.95, "IO": 0.05}, "oversubscription", "the server's cores",
     "shrink the pool toward 4"),
    ({"LWLock": 0.7, "CPU": 0.3}, "LWLock contention", "internal locks",
     "shrink the pool toward 4"),
    ({"IO": 0.8, "CPU": 0.2}, "I/O-bound", "disk I/O", "faster storage"),
    ({"Client": 0.6, "CPU": 0.4}, "client-bound", "their client", "--processes"),
])
def test_a_sweeps_extra_backends_are_named_by_what_they_wait_on(
        waits: dict[str, float], rule: str, queue: str, fix: str) -> None:
    """Flat throughput from 4 to 16 on a 2-core server, the statements' p99 up 4×: the
    finding names what the 16 active backends waited on, and the fix that follows."""
    points = (_point(2, 500, 5_000, 2, {"CPU": 1.0}), _point(4, 1000, 5_000, 4, {"CPU": 1.0}),
              _point(16, 1000, 20_000, 16, waits))
    (found,) = sweep_findings(points, "pool_size", server_cores=2)
    assert found.rule == rule and found.strategy == "psycopg:pool"
    assert found.evidence.startswith("at 16: 16 active backends")
    assert queue in found.evidence and fix in found.fix
    top = max(waits, key=waits.get)
    assert f"waiting on {top} {waits[top]:.0%}" in found.evidence


def test_a_sweep_still_scaling_or_without_samples_names_no_bottleneck() -> None:
    lock = {"Lock": 0.93, "CPU": 0.07}
    scaling = (_point(2, 500, 5_000, 2, lock), _point(4, 1000, 5_000, 4, lock),
               _point(16, 1500, 20_000, 16, lock))
    assert sweep_findings(scaling, "pool_size", server_cores=2) == ()
    unsampled = tuple(replace(p, active_max=None, wait_shares=None) for p in (
        _point(2, 500, 5_000, 2, lock), _point(4, 1000, 5_000, 4, lock),
        _point(16, 1000, 20_000, 16, lock)))
    assert sweep_findings(unsampled, "pool_size", server_cores=2) == ()


def test_every_per_run_finding_of_a_sweep_point_is_reported() -> None:
    """The points' own findings come through once per rule, saying at which sizes; the
    run's lock-contention evidence (which lock) joins the sweep's; 'pool too small' counts
    at the largest size only (the smaller ones are what the sweep compares)."""
    lock = {"Lock": 0.93, "CPU": 0.07}
    held = Finding("lock contention", "psycopg:pool", "93% of active backend samples waited "
                   "on a lock (Lock:transactionid)", "find the holder")
    small = Finding("pool too small", "psycopg:pool", "waiting", "grow the pool")
    churn = Finding("pool churn", "psycopg:pool", "1,000 connections opened", "keep them")
    idle = Finding("idle in transaction", "psycopg2:none", "6% idle in transaction",
                   "commit")
    points = (_point(2, 500, 5_000, 2, lock, (small,)),
              _point(4, 1000, 5_000, 4, lock, (held, small, churn)),
              _point(16, 1000, 20_000, 16, lock, (held, churn)),
              _point(0, 300, 9_000, 16, {"CPU": 1.0}, (idle,), strategy="psycopg2:none"))
    found = {(f.strategy, f.rule): f for f in sweep_findings(points, "pool_size",
                                                              server_cores=2)}
    assert set(found) == {("psycopg:pool", "lock contention"), ("psycopg:pool", "pool churn"),
                          ("psycopg2:none", "idle in transaction")}
    lock_found = found[("psycopg:pool", "lock contention")]
    assert lock_found.evidence.startswith("at 16: 16 active backends")
    assert lock_found.evidence.endswith("; at 4, 16: " + held.evidence)
    assert found[("psycopg:pool", "pool churn")].evidence == "at 4, 16: " + churn.evidence
    assert found[("psycopg2:none", "idle in transaction")].evidence == "at 0: " + idle.evidence


def test_a_hot_row_is_lock_contention_across_a_sweep(target: ConnectionTarget,
                                                     admin: psycopg.Connection,
                                                     table: str) -> None:
    """Every update also bumps one counter row and keeps its lock 5 ms (a trigger): the
    updates queue on that row's lock whatever the pool size. The sweep names lock
    contention, at every point whose run saw it, and never CPU oversubscription."""
    from poolbench.api import sweep
    from poolbench.db.workload import CREATE_TABLE

    counter = f"{table}_hot"
    admin.execute(CREATE_TABLE.format(table=quote_ident(table)))
    admin.execute(f"CREATE TABLE {quote_ident(counter)} (id int PRIMARY KEY, n bigint)")
    admin.execute(f"INSERT INTO {quote_ident(counter)} VALUES (1, 0)")
    admin.execute(f"CREATE OR REPLACE FUNCTION {quote_ident(table + '_bump')}() RETURNS "
                  "trigger LANGUAGE plpgsql AS $$ BEGIN "
                  f"UPDATE {quote_ident(counter)} SET n = n + 1 WHERE id = 1; "
                  "PERFORM pg_sleep(0.005); RETURN NEW; END $$")
    admin.execute(f"CREATE TRIGGER hot BEFORE UPDATE ON {quote_ident(table)} FOR EACH ROW "
                  f"EXECUTE FUNCTION {quote_ident(table + '_bump')}()")
    try:
        cores = os.cpu_count() or 1
        largest = 4 * cores
        config = RunConfig(target=target, strategies=("psycopg:pool",), rows=100,
                           workers=largest, warmup=0, trials=1, table=table, out_dir=None,
                           duration_s=1.5, mix=(("update", 1),), sample_interval_s=0.05)
        results = sweep(config, pool_sizes=(2, 4, largest), workers=(largest,))
    finally:
        admin.execute(f"DROP TABLE IF EXISTS {quote_ident(counter)}")
        admin.execute(f"DROP FUNCTION IF EXISTS {quote_ident(table + '_bump')}() CASCADE")
    evidence = [(p.pool_size, round(p.throughput_ops_s), p.active_max, p.wait_shares,
                 [f.rule for f in p.findings]) for p in results.points]
    last = results.points[-1]
    assert last.wait_shares and max(last.wait_shares, key=last.wait_shares.get) == "Lock", \
        evidence
    # every point's run evaluated its own rules: the largest pool's saw the lock
    assert "lock contention" in [f.rule for f in last.findings], evidence
    rules = [f.rule for f in results.findings]
    # Lock the largest point's top wait: a sweep-level finding, if any, is lock contention
    # (oversubscription needs CPU on top), so its absence holds by construction.
    assert "lock contention" in rules and "oversubscription" not in rules, (rules, evidence)
    (found,) = [f for f in results.findings if f.rule == "lock contention"]
    # It says where the runs saw it (the largest size among them) and which lock (the
    # largest size's own evidence), whether or not the sweep-level part (which compares the
    # points' throughputs, a matter of the machine) fired before it.
    fired = [p.pool_size for p in results.points
             if "lock contention" in [f.rule for f in p.findings]]
    (own,) = [f for f in last.findings if f.rule == "lock contention"]
    assert fired[-1] == largest and "Lock:" in own.evidence, (own, evidence)
    assert found.evidence.endswith(f"at {', '.join(map(str, fired))}: {own.evidence}"), (
        found, evidence)


def _activity(waits: dict[str, float], active_median: float) -> ActivitySummary:
    return ActivitySummary(samples=100, interval_s=0.05, seconds=5.0, backends_max=2,
                           active_median=active_median, active_max=2,
                           idle_in_transaction_share=0.0, wait_shares=waits,
                           wait_events={"Lock:transactionid": 93} if "Lock" in waits else {},
                           client_cpu_s=1.0, server_cpu_s=1.0, client_rss_max_mb=50.0,
                           server_rss_max_mb=50.0)


@pytest.mark.parametrize(("waits", "expected"), [
    ({"Lock": 0.93, "CPU": 0.07}, {"lock contention"}),
    ({"CPU": 1.0}, {"pool too small"}),
])
def test_a_pool_whose_backends_queue_on_a_lock_is_not_called_too_small(
        waits: dict[str, float], expected: set[str]) -> None:
    """16 workers wait for a pool of 2 longer than its statements take, one backend active
    of 2 on a 4-core server. With the backends mostly on CPU, the pool is too small; with
    93% of their samples waiting on a lock, a bigger pool would queue there too: lock
    contention is named, and no advice to grow the pool."""
    waited = LatencySummary(100, 5_000.0, 5_000, 9_000, 9_000, 9_000)
    statement = LatencySummary(100, 1_000.0, 1_000, 2_000, 2_000, 2_000)
    phase = PhaseResult(phase="update", trials=(), median_s=1.0, min_s=1.0, max_s=1.0, ops=100,
                        throughput_ops_s=100.0, errors={}, latency=waited, acquire=waited,
                        execute=statement, histogram_latency_us="", histogram_acquire_us="",
                        histogram_execute_us="", failed=statement, histogram_failed_us="")
    strategy = StrategyResult(name="psycopg:pool", pooled=True, is_async=False,
                              per_operation="", open_s=0.0, phases=(phase,), stats={},
                              leftover_rows_deleted=0, activity=_activity(waits, 1.0))
    results = RunResults(schema_version=SCHEMA_VERSION, run_tag="pb00000000", partial=False,
                         started_at="", finished_at="", environment={},
                         config={"pool_max": 2, "pool_min": 2, "processes": 1},
                         strategies=(strategy,), comparison=None, verification=None)
    assert {f.rule for f in findings(results, server_cores=4)} == expected

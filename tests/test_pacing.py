"""--processes, --rate and --duration: same counts, held rates, both latencies, exact cleanup."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from conftest import seed_table, table_contents

from poolbench import RunConfig, run
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.db.workload import quote_ident


def test_two_processes_report_the_same_operations_as_one(
        target: ConnectionTarget, admin: psycopg.Connection, table: str) -> None:
    seed_table(admin, table, 100)
    before = table_contents(admin, table)
    by_processes = {}
    for processes in (1, 2):
        results = run(RunConfig(target=target, strategies=("psycopg:pool", "asyncpg:pool"),
                                rows=150, workers=6, pool_max=6, warmup=0, trials=1,
                                table=table, out_dir=None, processes=processes))
        by_processes[processes] = {(s.name, p.phase): p.ops
                                   for s in results.strategies for p in s.phases}
        for s in results.strategies:
            assert s.error_count == 0 and s.server is not None and s.server.ok, s.server
            # Every row created, read, updated and deleted once, as the server counted.
            assert [c.server for c in s.server.checks[:3]] == [150, 150, 150]
            assert 2 <= s.stats["connections_opened"] <= 6  # two pools of 3, or one of 6
    assert by_processes[1] == by_processes[2]
    assert set(by_processes[2].values()) == {150}
    assert table_contents(admin, table) == before


def test_rate_is_held_and_both_latencies_reported(target: ConnectionTarget, table: str) -> None:
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=1, workers=4,
                            pool_max=4, warmup=0, trials=1, table=table, out_dir=None,
                            rate=400.0, duration_s=3.0))
    (s,) = results.strategies
    for p in s.phases[:3]:  # create, read, update are paced for 3 s; delete follows the rows
        assert p.throughput_ops_s == pytest.approx(400, rel=0.05), (p.phase, p.throughput_ops_s)
        assert p.ops == 1200 and p.scheduled is not None and p.scheduled.count == 1200
        # The rate is held, so operations start when due: the median operation waited for
        # no worker, and its latency from the schedule is its latency from its start.
        assert p.scheduled.p50_us - p.latency.p50_us < 2_000, (p.scheduled, p.latency)
    assert s.phase("delete").ops == s.phase("create").ops
    assert results.verification is not None and results.verification.ok


def test_stalled_pool_shows_in_scheduled_latency(target: ConnectionTarget,
                                                 admin: psycopg.Connection, table: str) -> None:
    """A pool of one and 50 ms inserts against 40 scheduled inserts a second: the backlog
    grows, and only latency from the scheduled start shows it (coordinated omission)."""
    seed_table(admin, table, 10)
    admin.execute("CREATE FUNCTION pb_test_slow() RETURNS trigger LANGUAGE plpgsql AS "
                  "$$ BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$")
    try:
        admin.execute(f"CREATE TRIGGER slow BEFORE INSERT ON {quote_ident(table)} "
                      "FOR EACH ROW EXECUTE FUNCTION pb_test_slow()")
        results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=60,
                                workers=1, pool_min=1, pool_max=1, warmup=0, trials=1,
                                table=table, out_dir=None, rate=40.0))
    finally:
        admin.execute(f"DROP TRIGGER IF EXISTS slow ON {quote_ident(table)}")
        admin.execute("DROP FUNCTION pb_test_slow()")
    create = results.strategies[0].phase("create")
    assert create.ops == 60 and create.scheduled is not None and create.scheduled.count == 60
    assert create.latency.p99_us < 150_000  # each insert itself takes ~50 ms
    assert create.scheduled.p99_us > 5 * create.latency.p99_us  # the queue does not hide
    assert create.throughput_ops_s < 25  # the pool, not the schedule, set the pace


def test_duration_runs_for_a_time_and_deletes_every_row(
        target: ConnectionTarget, admin: psycopg.Connection, table: str) -> None:
    seed_table(admin, table, 50)
    before = table_contents(admin, table)
    results = run(RunConfig(target=target, strategies=("asyncpg:pool",), rows=1, workers=4,
                            pool_max=4, warmup=0, trials=1, table=table, out_dir=None,
                            duration_s=1.0))
    (s,) = results.strategies
    for phase in ("create", "read", "update"):
        p = s.phase(phase)
        assert 0.95 <= p.median_s <= 1.5 and p.ops > 100, (phase, p.median_s, p.ops)
    assert s.phase("delete").ops == s.phase("create").ops
    assert s.server is not None and s.server.ok
    assert table_contents(admin, table) == before


def test_calibration_against_pgbench_returns_ratios(tmp_path, target: ConnectionTarget,
                                                    admin: psycopg.Connection,
                                                    table: str) -> None:
    seed_table(admin, table, 100)
    before = table_contents(admin, table)
    results = run(RunConfig(target=target, strategies=("psycopg:pool", "psycopg2:none"),
                            rows=100, workers=4, pool_max=4, warmup=0, trials=1, table=table,
                            out_dir=None, baseline="pgbench", baseline_seconds=1))
    cal = results.calibration
    assert cal is not None and "pgbench" in cal.pgbench
    assert {(f.script, f.connect_each) for f in cal.figures} == {
        (s, c) for s in ("read", "update", "insert+delete") for c in (False, True)}
    for f in cal.figures:
        # pgbench's tps and the transactions in its per-transaction log tell the same story.
        # pgbench's tps and its transaction count tell the same story; its log holds every
        # -C transaction and a 2% sample of the persistent ones.
        assert f.transactions / f.seconds == pytest.approx(f.tps, rel=0.25), f
        if f.connect_each:
            assert f.latency.count == f.transactions
        else:
            assert f.latency.count == pytest.approx(0.02 * f.transactions, rel=0.3, abs=20)
        assert f.connection_ms > 0
    assert {(r.strategy, r.against) for r in cal.ratios} == {("psycopg:pool", "persistent"),
                                                              ("psycopg2:none", "connect")}
    for r in cal.ratios:
        s = next(x for x in results.strategies if x.name == r.strategy)
        ref = cal.figure(r.script, connect_each=not s.pooled)
        if r.script == "read":  # each ratio is poolbench's figure over pgbench's
            assert r.throughput == round(s.phase("read").throughput_ops_s / ref.tps, 3)
            assert r.p50 == round(s.phase("read").latency.p50_us / ref.latency.p50_us, 3)
        assert (r.connect is not None) == (r.strategy == "psycopg2:none")
    assert results.harness_us_per_op is not None
    assert set(results.harness_us_per_op) == {"threads"}  # both strategies run on threads
    assert results.verification is not None and results.verification.ok
    assert table_contents(admin, table) == before


DEBIAN_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@pytest.mark.skipif(not DEBIAN_BIN_DIRS, reason="no PostgreSQL with contrib on this machine "
                    "(pgserver ships none): pg_stat_statements cannot be checked")
def test_statement_calls_agree_with_pg_stat_statements(table: str) -> None:
    """On a server with pg_stat_statements (Debian's, when installed), its calls join the
    cross-check and agree exactly with poolbench's counts."""
    with EmbeddedServer(max_connections=40, bin_dir=DEBIAN_BIN_DIRS[-1].parent) as server:
        assert server.stat_statements_available() and server.target is not None
        results = run(RunConfig(target=server.target, strategies=("psycopg:pool",
                                                                   "psycopg2:none"),
                                rows=50, workers=4, pool_max=4, warmup=0, trials=1,
                                table=table, out_dir=None))
    for s in results.strategies:
        assert s.server is not None and s.server.ok, s.server
        calls = {c.name: c for c in s.server.checks}
        for verb in ("INSERT", "UPDATE", "DELETE"):
            assert calls[f"{verb} calls"].server == 50

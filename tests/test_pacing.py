"""--processes, --rate and --duration: same counts, the schedule each phase computed, both
latencies, exact cleanup.

These tests check what the code decided (which operations, due when, the start instant each
process took), never how fast the machine was: how closely a run holds its rate is measured
in bench/pacing.py."""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace

import psycopg
import pytest
from conftest import seed_table, table_contents

import poolbench.workloads.phase as phase_module
from poolbench import RunConfig, run
from poolbench.config import Pace
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.db.workload import RunTable, delete_own_rows, ensure_table, new_run_tag, quote_ident
from poolbench.measure.metrics import PhaseMeasurement, now_ns
from poolbench.measure.processes import GO_AHEAD_S, ProcessExecutor
from poolbench.results import LatencySummary
from poolbench.strategies import StrategySettings, load_strategy
from poolbench.workloads.phase import PhaseSpec, WorkSource


def never_before_due(scheduled: LatencySummary | None, latency: LatencySummary) -> None:
    """An operation's latency from its scheduled start is at least its latency from its
    actual start (no operation starts before it is due), so every percentile is too."""
    assert scheduled is not None and scheduled.count == latency.count
    assert scheduled.p50_us >= latency.p50_us and scheduled.p99_us >= latency.p99_us
    assert scheduled.max_us >= latency.max_us, (scheduled, latency)


def test_the_rate_schedule_is_every_operation_once_at_n_over_rate() -> None:
    """400 a second for 3 s over two shares: operation n is due n / 400 s after the clock's
    start, each number in one share only, and exactly the 1200 due before the end."""
    workload = RunTable("users", new_run_tag())
    spec = PhaseSpec.of("read", workload.statements()["read"], workload, 0, rows=1,
                        ids=(1, 2, 3), pace=Pace(rate=400.0, duration_s=3.0))
    assert spec.count is None and spec.expected == 1200
    start = 10**12
    numbers: list[int] = []
    for part in range(2):
        source = WorkSource(spec.share(part, 2))
        source.start(start)
        plan = list(iter(source.due, None))
        assert [n for n, _ in plan] == list(range(part, 1200, 2))
        assert all(due == start + n * 2_500_000 for n, due in plan)
        numbers += [n for n, _ in plan]
    assert sorted(numbers) == list(range(1200))

    # A row count at a rate: that many operations, at n / rate, whatever the time.
    counted = PhaseSpec.of("create", workload.statements()["create"], workload, 0, rows=60,
                           ids=(), pace=Pace(rate=40.0))
    source = WorkSource(counted)
    source.start(start)
    assert list(iter(source.due, None)) == [(n, start + n * 25_000_000) for n in range(60)]


def test_a_duration_ends_the_phase_at_its_deadline() -> None:
    """Without a rate, --duration hands out operations until the clock passes its end."""
    workload = RunTable("users", new_run_tag())
    for duration, started_s_ago, ends in ((3600.0, 0, False), (1.0, 2, True)):
        spec = PhaseSpec.of("read", workload.statements()["read"], workload, 0, rows=1,
                            ids=(1, 2, 3), pace=Pace(duration_s=duration))
        source = WorkSource(spec)
        source.start(now_ns() - started_s_ago * 1_000_000_000)
        assert (source.due() is None) == ends
        if not ends:
            assert source.due() == (1, None) and source.next() == ((3,), None)


@pytest.mark.parametrize("made", [True, False], ids=["operations-made", "made-as-handed-out"])
def test_each_share_reads_and_deletes_the_rows_params_at_names(made: bool, monkeypatch) -> None:
    """A read or delete phase's next (its own fast path once started) hands out each number
    of its share once, with the row params_at gives it, and ends at the count: from the
    operations made before the clock starts, or (more rows than MADE_ITEMS) made as handed
    out."""
    if not made:
        monkeypatch.setattr(phase_module, "MADE_ITEMS", 3)
    workload = RunTable("users", new_run_tag())
    for phase in ("read", "delete"):
        spec = PhaseSpec.of(phase, workload.statements()[phase], workload, 0, rows=1,
                            ids=(5, 6, 7, 8), pace=Pace())
        assert spec.count == 4
        # each row once, and more operations than rows: they wrap around
        for whole, (part, parts) in itertools.product(
                (spec, replace(spec, count=11)), ((0, 1), (1, 3))):
            share = whole.share(part, parts)
            source = WorkSource(share)
            assert (source._items is not None) == made
            source.start()
            assert list(iter(source.next, None)) == [
                (whole.params_at(n), None) for n in range(part, whole.count or 0, parts)]
            assert source.next() is None  # and stays ended


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
                            rate=400.0, duration_s=2.0))
    (s,) = results.strategies
    for p in s.phases[:3]:  # create, read, update are paced for 2 s; delete follows the rows
        # The schedule's operations, each once: 400 a second for 2 s.
        assert p.ops == 800 and p.error_count == 0, (p.phase, p.ops, p.errors)
        never_before_due(p.scheduled, p.latency)
        # The last operation is due at 1.9975 s and none starts early, so the schedule is
        # never outrun: the phase lasts at least that, and never exceeds the rate.
        assert p.median_s >= 1.9975 and p.throughput_ops_s <= 800 / 1.9975, p
    assert s.phase("delete").ops == s.phase("create").ops
    assert results.verification is not None and results.verification.ok


@pytest.mark.parametrize("go_ahead_s", [GO_AHEAD_S, -1.0])
def test_processes_start_behind_one_barrier_on_one_schedule(
        go_ahead_s: float, target: ConnectionTarget, admin: psycopg.Connection,
        table: str) -> None:
    """Two processes, 200 operations a second for 1 s. Once both processes' workers wait,
    the parent names one start instant; a process starts its clock then, or when it learns
    it if later (here, with -1.0, the instant is named a second in the past): never
    earlier, so no operation is overdue when its process starts (no burst). Between them
    the processes run the schedule exactly: operations 0 to 199, each once."""
    ensure_table(admin, table)
    workload = RunTable(table, new_run_tag())
    settings = StrategySettings(target=target, workers=4, pool_min=4, pool_max=4,
                                acquire_timeout_s=30.0)
    spec = PhaseSpec.of("create", workload.statements()["create"], workload, 0, rows=1, ids=(),
                        pace=Pace(rate=200.0, duration_s=1.0))
    executor = ProcessExecutor(load_strategy("psycopg:pool"), settings, processes=2,
                               stop=threading.Event(), go_ahead_s=go_ahead_s)
    try:
        executor.open()
        phase = executor.run_phase(spec, lambda advance: None)
    finally:
        executor.close()
    try:
        names = [r[0] for r in admin.execute(
            f"SELECT username FROM {quote_ident(table)} WHERE starts_with(username, %s)",
            (workload.prefix,))]
    finally:
        delete_own_rows(admin, table, workload.prefix)

    named = phase.named_start_ns
    assert named is not None and len(phase.starts_ns) == 2
    late_by = max(0, int(-go_ahead_s * 1e9))  # a past instant: every process learns it late
    assert all(start >= named + late_by for start in phase.starts_ns), (named, phase.starts_ns)
    assert phase.start_ns == min(phase.starts_ns)
    assert sorted(int(n.rsplit("_", 1)[1]) for n in names) == list(range(200))
    m = PhaseMeasurement.merge(phase="create", trial=0, warmup=False,
                               elapsed_s=phase.elapsed_s, recorders=phase.recorders)
    assert m.ops == 200 and not m.errors, m.errors
    never_before_due(LatencySummary.of(m.scheduled), LatencySummary.of(m.latency))
    # Each process's last operation (198 and 199) is due 0.99 s and 0.995 s after its start.
    assert phase.end_ns >= max(phase.starts_ns) + 990_000_000


def test_a_stop_reaches_the_workers_of_every_process(
        target: ConnectionTarget, admin: psycopg.Connection, table: str) -> None:
    """A stop asked for while two processes run a ten-minute unpaced phase ends the phase in
    both: each child's workers look at an Event of their own, which its relay sets from the
    parent's shared flag (a multiprocessing Event's is_set per operation cost 0.6 µs)."""
    ensure_table(admin, table)
    workload = RunTable(table, new_run_tag())
    settings = StrategySettings(target=target, workers=2, pool_min=2, pool_max=2,
                                acquire_timeout_s=30.0)
    spec = PhaseSpec.of("create", workload.statements()["create"], workload, 0, rows=1, ids=(),
                        pace=Pace(duration_s=600.0))
    stop = threading.Event()
    executor = ProcessExecutor(load_strategy("psycopg:pool"), settings, processes=2, stop=stop)
    try:
        executor.open()
        stop.set()
        phase = executor.run_phase(spec, lambda advance: None)
    finally:
        executor.close()
        delete_own_rows(admin, table, workload.prefix)
    assert len(phase.starts_ns) == 2
    # Stopped, not run out: every worker ended long before the phase's ten minutes.
    assert phase.end_ns < min(phase.starts_ns) + 300 * 10**9


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
    assert create.ops == 60 and create.error_count == 0, create.errors
    never_before_due(create.scheduled, create.latency)
    assert create.scheduled is not None
    # Bounds that hold by construction, however slow the machine: each insert sleeps at
    # least 50 ms and one connection runs them one after another, so operation n ends at
    # least (n + 1) * 50 ms after the start, while it was due at n * 25 ms.
    assert create.latency.p50_us >= 50_000
    assert create.throughput_ops_s <= 20.0  # 60 operations took at least 3 s
    # Operation n started at least n * 25 ms late: latency from its actual start hides
    # that queue; latency from the schedule shows it (on average 737.5 ms or more).
    assert create.scheduled.mean_us - create.latency.mean_us >= 700_000
    assert create.scheduled.p50_us >= 775_000  # the 30th operation: 50 + 29 * 25 ms
    assert create.scheduled.max_us >= 1_525_000  # the last: 50 + 59 * 25 ms


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
        # Every worker stops once it sees the clock past the deadline, so the phase lasts
        # at least its duration (how much longer is the machine's speed, not a behaviour).
        assert p.median_s >= 1.0 and p.ops > 0 and p.error_count == 0, (phase, p)
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
                            out_dir=None, baseline="pgbench", baseline_seconds=1,
                            connect_samples=1))
    cal = results.calibration
    assert cal is not None and "pgbench" in cal.pgbench
    assert {(f.script, f.connect_each) for f in cal.figures} == {
        (s, c) for s in ("read", "update", "insert+delete") for c in (False, True)}
    for f in cal.figures:
        # Its figures are pgbench's own (tests/test_calibrate.py checks them against its
        # output); its log holds every -C transaction and a 2% sample of the persistent ones.
        assert f.transactions > 0 and f.tps > 0, f
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


def test_statement_calls_agree_with_pg_stat_statements(table: str) -> None:
    """On a server with pg_stat_statements (the embedded one preloads it), its calls join
    the cross-check and agree exactly with poolbench's counts."""
    with EmbeddedServer(max_connections=40) as server:
        assert server.stat_statements_available() and server.target is not None
        results = run(RunConfig(target=server.target, strategies=("psycopg:pool",
                                                                   "psycopg2:none"),
                                rows=50, workers=4, pool_max=4, warmup=0, trials=1,
                                table=table, out_dir=None, connect_samples=1))
    for s in results.strategies:
        assert s.server is not None and s.server.ok, s.server
        calls = {c.name: c for c in s.server.checks}
        for verb in ("INSERT", "UPDATE", "DELETE"):
            assert calls[f"{verb} calls"].server == 50

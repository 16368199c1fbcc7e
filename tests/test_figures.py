"""Figures that must mean what they say: failed operations keep their time, the headline
never crowns a failing pool, the processes' phase clock, the server's sessions on a shared
database, and poolbench's own cost measured on the run's path."""

from __future__ import annotations

import threading
from collections import Counter

import psycopg
import pytest
from conftest import seed_table

from poolbench import RunConfig, run
from poolbench.db.target import ConnectionTarget
from poolbench.db.workload import quote_ident
from poolbench.events import RunEvents
from poolbench.measure.harness import REPEATS, SAMPLE_OPERATIONS, WARMUPS
from poolbench.results import (
    PHASES,
    SCHEMA_VERSION,
    LatencySummary,
    PhaseResult,
    RunResults,
    StrategyResult,
    comparison,
)


@pytest.fixture
def slow_table(admin: psycopg.Connection, table: str):
    """Inserts into the table take 50 ms (a trigger)."""
    seed_table(admin, table, 10)
    admin.execute("CREATE OR REPLACE FUNCTION pb_fig_slow() RETURNS trigger LANGUAGE plpgsql "
                  "AS $$ BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$")
    admin.execute(f"CREATE TRIGGER slow BEFORE INSERT ON {quote_ident(table)} "
                  "FOR EACH ROW EXECUTE FUNCTION pb_fig_slow()")
    yield table
    admin.execute(f"DROP TRIGGER IF EXISTS slow ON {quote_ident(table)}")


@pytest.mark.parametrize(("strategy", "rate"), [("psycopg:pool", 40.0), ("psycopg:pool", None),
                                              ("psycopg-async:pool", None)])
def test_stalled_open_loop_counts_failed_operations_in_scheduled_latency(
        target: ConnectionTarget, slow_table: str, strategy: str, rate: float | None) -> None:
    """A pool of one, 50 ms inserts, 40 due a second (or as fast as they go) and a 0.1 s
    acquire timeout: waiters fail. Their time stays in the figures: in ``failed`` and, when
    paced, in ``scheduled``."""
    results = run(RunConfig(target=target, strategies=(strategy,), rows=40, workers=4,
                            pool_min=1, pool_max=1, warmup=0, trials=1, table=slow_table,
                            out_dir=None, rate=rate, acquire_timeout_s=0.1,
                            sample_interval_s=0, connect_samples=0))
    create = results.strategies[0].phase("create")
    failed = create.error_count
    assert failed > 0 and create.ops + failed == 40, create.errors
    assert set(create.errors) == {"acquire: PoolTimeout"}, create.errors
    assert create.failed.count == failed
    assert create.failed.p50_us >= 95_000  # each waited out the 0.1 s acquire timeout
    if rate:
        assert create.scheduled is not None and create.scheduled.count == 40
    else:
        assert create.scheduled is None or create.scheduled.count == 0


def _strategy(name: str, pooled: bool, seconds: float, errors: int) -> StrategyResult:
    none = LatencySummary(0, 0.0, 0, 0, 0, 0)
    phases = tuple(PhaseResult(
        phase=p, trials=(), median_s=seconds, min_s=seconds, max_s=seconds, ops=10,
        throughput_ops_s=10 / seconds, errors={"acquire: PoolTimeout": errors} if errors else {},
        latency=none, acquire=none, execute=none, histogram_latency_us="",
        histogram_acquire_us="", histogram_execute_us="", failed=none, histogram_failed_us="")
        for p in PHASES)
    return StrategyResult(name=name, pooled=pooled, is_async=False, per_operation="",
                          open_s=0.0, phases=phases, stats={}, leftover_rows_deleted=0)


def _results(*strategies: StrategyResult, **config: object) -> RunResults:
    return RunResults(schema_version=SCHEMA_VERSION, run_tag="pb00000000", partial=False,
                      started_at="", finished_at="", environment={}, strategies=strategies,
                      config={"rows": 10, "workers": 1, "pool_min": 1, "pool_max": 1,
                              "trials": 1, **config},
                      comparison=comparison(strategies), verification=None)


def _console_text(results: RunResults) -> str:
    from rich.console import Console

    from poolbench.report.console import render_seed_lines

    console = Console(record=True, width=300)
    render_seed_lines(results, console)
    return console.export_text()


def test_headline_never_crowns_a_pool_that_failed() -> None:
    fails_fast = _strategy("psycopg2:simple", True, 0.1, errors=7)
    clean = _strategy("psycopg2:threaded", True, 0.5, errors=0)
    c = comparison((_strategy("psycopg2:none", False, 2.0, 0), fails_fast, clean))
    assert c is not None
    (line,) = c.drivers
    assert line.pooled == "psycopg2:threaded" and line.pooled_s == 2.0
    assert line.excluded == {"psycopg2:simple": 28}
    c = comparison((_strategy("psycopg2:none", False, 2.0, 0), fails_fast))
    assert c is not None and c.drivers == ()
    assert c.unpaired == {"psycopg2:none": "every pooled psycopg2 strategy had failed "
                                           "operations (psycopg2:simple: 28)"}


def test_seed_line_pairs_each_no_pool_with_its_own_driver() -> None:
    """asyncpg:pool is the fastest of all, but each no-pool strategy is compared with the
    pools of its own driver: a faster driver is not a pool's gain. One line per driver."""
    from poolbench.report.markdown import markdown

    results = _results(_strategy("psycopg2:none", False, 2.0, 0),
                       _strategy("psycopg2:threaded", True, 1.5, 0),
                       _strategy("psycopg:none", False, 1.0, 0),
                       _strategy("psycopg:pool", True, 0.25, 0),
                       _strategy("asyncpg:pool", True, 0.1, 0))
    c = results.comparison
    assert c is not None and c.unpaired == {}
    assert [(d.driver, d.no_pool, d.no_pool_s, d.pooled, d.pooled_s, d.gain_pct)
            for d in c.drivers] == [
        ("psycopg2", "psycopg2:none", 8.0, "psycopg2:threaded", 6.0, 25.0),
        ("psycopg", "psycopg:none", 4.0, "psycopg:pool", 1.0, 75.0)]
    lines = ["Without Pooling: 8.00s, With Pooling: 6.00s, Performance Gain: 25.00%",
             "Without Pooling: 4.00s, With Pooling: 1.00s, Performance Gain: 75.00%"]
    for text in (_console_text(results), markdown(results)):
        assert [x.strip() for x in text.splitlines() if "Performance Gain" in x] == lines
    # a no-pool strategy whose driver ran no pool gets no line, and says why
    c = comparison((_strategy("psycopg2:none", False, 2.0, 0),
                    _strategy("asyncpg:pool", True, 0.1, 0)))
    assert c is not None and c.drivers == ()
    assert c.unpaired == {"psycopg2:none": "no pooled psycopg2 strategy was run"}


def test_a_no_pool_strategy_that_failed_is_flagged_in_every_view() -> None:
    """Its time includes operations that did no work: every view says so beside the line."""
    from poolbench.report.markdown import markdown

    results = _results(_strategy("psycopg2:none", False, 2.0, 3),
                       _strategy("psycopg2:threaded", True, 1.0, 0))
    (line,) = results.comparison.drivers  # type: ignore[union-attr]
    assert line.no_pool_errors == 12
    flag = ("psycopg2:none had 12 failed operations: its time includes them though they did "
            "no work, so this line does not compare the same work")
    assert flag in _console_text(results)
    assert f"**Warning:** {flag}" in markdown(results)


def test_processes_start_together_and_hold_the_rate(target: ConnectionTarget,
                                                   table: str) -> None:
    """Two processes on one paced schedule: every due operation runs once, and each phase
    lasts at least until its last operation was due (the barrier and the absence of a
    start-up burst are tested on the schedule itself, in test_pacing)."""
    results = run(RunConfig(target=target, strategies=("psycopg:pool", "asyncpg:pool"), rows=1,
                            workers=4, pool_max=4, warmup=0, trials=1, table=table,
                            out_dir=None, processes=2, rate=200.0, duration_s=1.0))
    for s in results.strategies:
        for p in s.phases[:3]:
            assert p.ops == 200 and p.error_count == 0, (s.name, p.phase, p.ops)
            # the last of 200 operations is due at 0.995 s
            assert p.median_s >= 0.99, (s.name, p.phase, p.median_s)
            # an operation never starts before it is due: from its due time it took longer
            assert p.scheduled is not None and p.scheduled.count == 200
            assert p.scheduled.p50_us >= p.latency.p50_us
            assert p.scheduled.p99_us >= p.latency.p99_us
        assert s.server is not None and s.server.ok


def test_sessions_on_a_shared_database_are_shown_not_failed(target: ConnectionTarget,
                                                            table: str) -> None:
    """Another application connecting during the run makes pg_stat_database.sessions
    database-wide: the check says so instead of failing. It connects as the strategy starts
    (inside the check's window, which opens before) and stays until the run is over, its
    session published at once: no thread racing the run's end."""
    other = target.with_params(application_name="someone-else")
    held: list[psycopg.Connection] = []

    def connect(**_: object) -> None:
        conn = psycopg.connect(other.conninfo(), autocommit=True)
        held.append(conn)
        # The session count is published as the backend goes idle, before this returns.
        conn.execute("SELECT pg_stat_force_next_flush()")

    events = RunEvents()
    events.strategy_started.add_listener(connect)
    try:
        results = run(RunConfig(target=target, strategies=("psycopg:none",), rows=200,
                                workers=4, warmup=0, trials=1, table=table, out_dir=None,
                                connect_samples=1),
                      events=events)
    finally:
        for conn in held:
            conn.close()
    assert len(held) == 1
    x = results.strategies[0].server
    assert x is not None
    sessions = next(c for c in x.checks if c.name == "sessions opened")
    assert not sessions.exact and sessions.server > sessions.ours == 800
    assert x.ok and any("database-wide" in n for n in x.notes)


def test_sessions_are_exact_when_the_database_is_ours(target: ConnectionTarget,
                                                      table: str) -> None:
    results = run(RunConfig(target=target, strategies=("psycopg:none",), rows=50, workers=4,
                            warmup=0, trials=1, table=table, out_dir=None, connect_samples=1),
                  harness=False)  # as a sweep's points run: no own cost measured
    x = results.strategies[0].server
    assert x is not None
    sessions = next(c for c in x.checks if c.name == "sessions opened")
    assert sessions.exact and sessions.ours == sessions.server == 200
    assert results.harness_us_per_op is None


def test_harness_runs_on_each_executor_kind_through_the_progress_hook(
        target: ConnectionTarget, table: str) -> None:
    """The harness runs on the run's executors (threads and asyncio here) and reports
    through the run's own progress hook, before the first strategy starts."""
    events = RunEvents()
    before_start: list[int] = []
    started = threading.Event()
    events.strategy_started.add_listener(lambda **_: started.set())
    events.progress.add_listener(lambda advance: None if started.is_set()
                                 else before_start.append(advance))
    results = run(RunConfig(target=target, strategies=("psycopg:pool", "asyncpg:pool"),
                            rows=20, workers=8, pool_max=8, warmup=0, trials=1, table=table,
                            out_dir=None), events=events)
    assert results.harness_us_per_op is not None
    assert set(results.harness_us_per_op) == {"threads", "asyncio"}
    assert sum(before_start) == 2 * (WARMUPS + REPEATS) * SAMPLE_OPERATIONS


def test_per_second_series_sums_to_the_operations(target: ConnectionTarget,
                                                  table: str) -> None:
    results = run(RunConfig(target=target, strategies=("psycopg:pool", "asyncpg:pool"), rows=1,
                            workers=4, pool_max=4, warmup=0, trials=1, table=table,
                            out_dir=None, duration_s=1.25, processes=1))
    for s in results.strategies:
        for p in s.phases:
            for t in p.trials:
                assert sum(sec.ops for sec in t.timeline) == t.ops, (s.name, p.phase)
                assert [sec.second for sec in t.timeline] == sorted(
                    {sec.second for sec in t.timeline})
        trial = s.phase("read").trials[0]
        read = trial.timeline
        # A 1.25 s phase: operations end in its first second and after it, and every second
        # lies within the phase (from 0 to its last, which its end may cut short).
        assert len(read) >= 2 and all(sec.p50_us <= sec.p99_us for sec in read)
        assert read[0].second >= 0 and read[-1].second <= int(trial.elapsed_s), (
            [sec.second for sec in read], trial.elapsed_s)
        a = s.activity
        # the sampler looks as the strategy starts and as it stops, and between
        assert a is not None and a.samples >= 2 and a.timeline
        assert a.client_cpu_s > 0 and a.server_cpu_s is not None and a.server_cpu_s > 0


@pytest.fixture
def slow_updates(admin: psycopg.Connection, table: str):
    """Updates of the table take at least 10 ms (a trigger): an operation holds its
    connection that long, far longer than handing a connection over takes."""
    seed_table(admin, table, 10)
    admin.execute("CREATE OR REPLACE FUNCTION pb_fig_slow_update() RETURNS trigger LANGUAGE "
                  "plpgsql AS $$ BEGIN PERFORM pg_sleep(0.01); RETURN NEW; END $$")
    admin.execute(f"CREATE TRIGGER slow BEFORE UPDATE ON {quote_ident(table)} "
                  "FOR EACH ROW EXECUTE FUNCTION pb_fig_slow_update()")
    yield table
    admin.execute(f"DROP TRIGGER IF EXISTS slow ON {quote_ident(table)}")


@pytest.mark.parametrize("pool", [2, 16])
def test_per_second_waiters_are_the_workers_without_a_connection(
        pool: int, target: ConnectionTarget, slow_updates: str) -> None:
    """16 workers on a pool of 2, each operation holding its connection 10 ms or more: in
    every second the mean number of workers waiting for a connection (their acquire time
    over the second) is never more than the workers, and the two holding a connection are
    not among them (half the pool is left for hand-overs, which count as waiting); on a
    pool of 16 there is a connection for every worker, so at most half of them wait even
    when hand-overs are slow. Counting an operation's whole time instead would give 16.
    The seconds add up to the phase's own acquire time (Little's law), so a series that
    lost the waits is caught too. How many wait on a given machine is bench/'s business."""
    workers = 16
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=100,
                            workers=workers, pool_min=pool, pool_max=pool, warmup=0, trials=1,
                            table=slow_updates, out_dir=None, duration_s=3.0,
                            sample_interval_s=0, mix=(("update", 1),)))
    mix = results.strategies[0].phase("mix")
    series = mix.trials[0].timeline
    assert mix.error_count == 0, mix.errors
    assert sum(sec.waiting for sec in series) == pytest.approx(
        mix.acquire.mean_us * mix.ops / 1e6, rel=0.01, abs=0.01), (series, mix.acquire)
    whole = series[:-1]  # the last second is cut short by the phase's end
    assert len(whole) >= 2 and all(
        0 <= sec.waiting <= workers - pool + pool / 2 for sec in whole), series


def test_interleaved_trials_spread_is_over_the_counted_trials(target: ConnectionTarget,
                                                               table: str) -> None:
    """With --interleave each window warms its pool before its counted trial (the rotation
    and the per-window counts are tested in test_interleave): the spread is computed over
    the counted trials only."""
    results = run(RunConfig(target=target, strategies=("psycopg:pool", "asyncpg:pool"),
                            rows=30, workers=3, pool_max=3, warmup=1, trials=2, table=table,
                            out_dir=None, interleave=True))
    for s in results.strategies:
        read = s.phase("read")
        values = [t.throughput_ops_s for t in read.trials if not t.warmup]
        assert len(values) == 2 and len(read.trials) == 4
        assert read.throughput_spread_pct == pytest.approx(
            (max(values) - min(values)) / (sum(values) / 2) * 100, abs=0.1)
        assert s.server is not None and s.server.ok, s.server


def test_phase_sink_counts_a_straggling_second_and_every_operation() -> None:
    """Workers hand each second on as their next begins, and the sink packs seconds that
    are two behind; a worker whose slow operation makes it hand on a long-packed second
    still has it counted, and the totals are every operation recorded."""
    from poolbench.measure.metrics import OperationRecorder, PhaseSink, pairs, second_index

    sink = PhaseSink()
    fast, slow = OperationRecorder(sink=sink), OperationRecorder(sink=sink)
    s = 1_000_000_000
    for second in range(8):
        for k in range(100):
            start = second * s
            fast.record(start, start + 10_000, start + 20_000, start + 300_000 + k * 1000)
    slow.record(0, 1_000, 2_000, 500_000)  # 500 µs, in second 0
    slow.record(0, 1_000, 2_000, 7 * s + 1)  # 7 s, ending in second 7: second 0 handed late
    fast.finish()
    slow.finish()
    seconds = sink.seconds
    assert sorted(seconds) == list(range(8))
    per_second = {sec: sum(n for _, n in pairs(c)) for sec, c in seconds.items()}
    assert per_second == {0: 101, **{sec: 100 for sec in range(1, 7)}, 7: 101}
    assert second_index(500) in dict(pairs(seconds[0]))
    assert second_index(7_000_000) in dict(pairs(seconds[7]))
    assert sum(sink.counts("latency").values()) == 802
    assert sum(sink.counts("acquire").values()) == 802 and not sink.counts("failed")
    assert not fast.latency and not slow.latency  # handed on: the sink holds them



def test_record_buckets_each_time_as_bucket_index_and_second_index_do() -> None:
    """record's batches find the buckets bucket_index/second_index find: on each side of
    both boundaries (16 µs per second, 2048 µs in HDR) its buckets are theirs."""
    from poolbench.measure.metrics import OperationRecorder, bucket_index, second_index

    for us in (1, 15, 16, 17, 18, 2047, 2048, 2049, 2050, 5_000, 10_000_000):
        ns = us * 1000
        steps = OperationRecorder()
        steps.record(0, ns, 2 * ns, 2 * ns)  # acquire and execute: us each
        steps.finish()
        assert dict(steps.acquire) == dict(steps.execute) == {bucket_index(us): 1}, us
        whole = OperationRecorder()
        whole.record(0, 0, 0, ns)  # the operation: us
        whole.finish()
        assert dict(whole.latency) == {bucket_index(us): 1}, us
        assert {i for c in whole.seconds.values() for i in c} == {second_index(us)}, us


class _OneByOne:
    """The recorder's arithmetic before batches, one operation at a time (its reference)."""

    def __init__(self, leak_ns: float, origin_ns: int) -> None:
        self.leak_ns, self.origin_ns, self.second = leak_ns, origin_ns, 0
        self.hist: dict[str, Counter[int]] = {k: Counter() for k in
                                               ("latency", "acquire", "execute", "scheduled",
                                                "failed")}
        self.seconds: dict[int, Counter[int]] = {}
        self.tenths: dict[int, list[int]] = {}
        self.waits: Counter[int] = Counter()
        self.ok = self.held = 0

    def record(self, t0: int, t1: int, t2: int, t3: int, scheduled: int | None) -> None:
        from poolbench.measure.metrics import bucket_index, second_index

        self.ok += 1
        us = (t3 - t0) // 1000 or 1
        self.hist["latency"][bucket_index(us)] += 1
        self.second, tenth = divmod((t3 - self.origin_ns) // 100_000_000, 10)
        self.seconds.setdefault(self.second, Counter())[second_index(us)] += 1
        self.tenths.setdefault(self.second, [0] * 10)[tenth] += 1
        self.waits[self.second] += t1 - t0
        self.hist["acquire"][bucket_index((t1 - t0) // 1000 or 1)] += 1
        self.hist["execute"][bucket_index((t2 - t1) // 1000 or 1)] += 1
        if scheduled is not None:
            self.hist["scheduled"][bucket_index((t3 - scheduled) // 1000 or 1)] += 1
        self.held += t3 - t1 > self.leak_ns

    def fail(self, t0: int, t_end: int, scheduled: int | None) -> None:
        from poolbench.measure.metrics import bucket_index

        self.hist["failed"][bucket_index((t_end - t0) // 1000 or 1)] += 1
        self.waits[self.second] += t_end - t0  # an acquire's: where the last success ended
        if scheduled is not None:
            self.hist["scheduled"][bucket_index((t_end - scheduled) // 1000 or 1)] += 1


@pytest.mark.parametrize("with_sink", [False, True])
@pytest.mark.parametrize("counted_every", [0, 2])
def test_batched_record_counts_what_one_by_one_counting_does(
        with_sink: bool, counted_every: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Operations counted in batches (numpy) land in the buckets, seconds, tenths and waits
    they did one by one: latencies on each side of 16 µs and EXACT_US and far beyond, ends
    on each side of second and 0.1 s boundaries (one before the phase's start), holds on
    each side of the leak threshold, paced operations and failed acquires between them,
    over several packed batches, counted at the end or (``counted_every``) every two
    batches as well."""
    import random

    from poolbench.measure import metrics
    from poolbench.measure.metrics import (
        BATCH_OPERATIONS,
        EXACT_US,
        OperationRecorder,
        PhaseSink,
        pairs,
    )

    # counted every two batches, or (0) only at the end
    monkeypatch.setattr(metrics, "COUNT_OPERATIONS", (counted_every or 1000) * BATCH_OPERATIONS)

    origin, leak_s = 5_000_000_000, 0.25
    rng = random.Random(20)
    us_edges = [0, 1, 15, 16, 17, EXACT_US - 1, EXACT_US, EXACT_US + 1, 4 * EXACT_US - 1,
                4 * EXACT_US, 123_456_789, 1_000_000_000]  # 3 of them: < 1 h
    ns_edges = [0, 999, 1000, 1001, 250_000_000, 250_000_001]
    sink = PhaseSink() if with_sink else None
    rec = OperationRecorder(leak_s, sink=sink)
    rec.origin_ns = origin
    ref = _OneByOne(leak_s * 1e9, origin)
    t3 = origin - 1_500_000_000
    for n in range(3 * BATCH_OPERATIONS + 17):
        t3 += rng.choice([1, 999, 99_999_999, 100_000_000, 2_500_000, 1_000_000_000])
        parts = [rng.choice(us_edges) * 1000 + rng.choice(ns_edges) for _ in range(3)]
        t2 = t3 - parts[0] % 400_000_000
        t1 = t2 - parts[1]
        t0 = t1 - parts[2]
        scheduled = t0 - rng.choice(us_edges) * 1000 if n % 3 == 0 else None
        if n % 97 == 5 or n % BATCH_OPERATIONS == 0:  # the latter: nothing unpacked
            rec.fail(TimeoutError(), "acquire", t0, t1, scheduled)
            ref.fail(t0, t1, scheduled)
        rec.record(t0, t1, t2, t3, scheduled)
        ref.record(t0, t1, t2, t3, scheduled)
    for end in (origin - 1, origin, origin + 99_999_999, origin + 100_000_000,
                origin + 999_999_999, origin + 1_000_000_000):  # back in time: a straggler
        for held in (250_000_000, 250_000_001):  # at the leak threshold, and past it
            times = (end - held - 16_000, end - held, end - 2_048_000, end)
            rec.record(*times, end - 1)
            ref.record(*times, end - 1)
    # counted on the way: all but the last batch and the odd ones (or nothing yet)
    assert rec.ok == (2 * BATCH_OPERATIONS if counted_every else 0)
    rec.finish()
    if sink is not None:
        seconds, tenths, waits = sink.seconds, sink.tenths, sink.waits
        hist = {kind: dict(sink.counts(kind)) for kind in ref.hist}
    else:
        seconds, tenths, waits = rec.seconds, rec.tenths, rec.waits
        hist = {kind: dict(getattr(rec, kind)) for kind in ref.hist}
    assert hist == {kind: dict(counts) for kind, counts in ref.hist.items()}
    assert {s: dict(pairs(c)) for s, c in seconds.items()} == \
        {s: dict(c) for s, c in ref.seconds.items()}
    assert {s: list(t) for s, t in tenths.items()} == ref.tenths
    assert dict(waits) == {s: w for s, w in ref.waits.items() if w}
    assert (rec.ok, rec.held_too_long) == (ref.ok, ref.held)
    assert min(seconds) < 0 and ref.held and hist["scheduled"] and hist["failed"]


def test_fifty_workers_counts_merge_to_every_operation() -> None:
    """Each worker records into its own recorder (no lock per operation) and hands its counts
    on once a second and at the end; merged, they are every operation, once: the operation
    count, each histogram's total, the per-second series and the progress reported."""
    from poolbench.db.workload import RunTable, Statement
    from poolbench.measure.executor import in_process_executor
    from poolbench.measure.harness import NullStrategy
    from poolbench.measure.metrics import PhaseMeasurement, pairs
    from poolbench.strategies import StrategySettings
    from poolbench.workloads.phase import PhaseSpec

    operations, workers = 5_000, 50
    settings = StrategySettings(target=None, workers=workers, pool_min=0,  # type: ignore[arg-type]
                                pool_max=workers, acquire_timeout_s=float("inf"))
    executor = in_process_executor(NullStrategy, settings, stop=threading.Event())
    spec = PhaseSpec("read", Statement("read", "", True), RunTable("null", "pb00000000"), 0,
                     count=operations, ids=(1,))
    progress: list[int] = []
    executor.open()
    try:
        run = executor.run_phase(spec, progress.append)
    finally:
        executor.close()
    assert len(run.recorders) == workers
    m = PhaseMeasurement.merge(phase="read", trial=0, warmup=False, elapsed_s=run.elapsed_s,
                               recorders=run.recorders)
    assert m.ops == operations and m.errors == {}
    assert [h.get_total_count() for h in (m.latency, m.acquire, m.execute, m.scheduled,
                                          m.failed)] == [operations] * 3 + [0, 0]
    assert m.seconds is not None
    assert sum(n for counts in m.seconds.values() for _, n in pairs(counts)) == operations
    assert sum(progress) == operations


def test_time_bars_add_up_to_the_operation(target: ConnectionTarget, table: str) -> None:
    """'Where an operation's time goes', in the PNG and in the HTML: each bar's segments
    (waiting for a connection, the statement, the rest) stack to the operation's own mean.
    Threads on a pool smaller than the workers: every segment has time in it."""
    from poolbench.report.chart import ChartExporter
    from poolbench.report.html import _figures

    results = run(RunConfig(target=target, strategies=("psycopg2:threaded", "asyncpg:pool"),
                            rows=300, workers=8, pool_min=4, pool_max=4, warmup=0, trials=1,
                            table=table, out_dir=None))
    phases = [(s.name, p) for s in results.strategies for p in s.phases]
    assert len(phases) == 8

    def near(total_ms: float, p: PhaseResult) -> bool:
        # the three means are read from histograms at 0.1% precision
        return abs(total_ms * 1000 - p.latency.mean_us) <= 0.002 * p.latency.mean_us + 0.2

    fig = ChartExporter().figure(results)
    try:
        bars = [patch for patch in fig.axes[3].patches if patch.get_gid()]
        tops: dict[tuple[str, int], list[float]] = {}
        for strategy in results.strategies:
            for segment in ("wait", "statement", "rest"):
                mine = [b for b in bars if b.get_gid() == f"{strategy.name}:{segment}"]
                assert len(mine) == len(strategy.phases), (strategy.name, segment)
                for i, b in enumerate(mine):
                    tops.setdefault((strategy.name, i), []).append(b.get_y() + b.get_height())
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    for name, p in phases:
        i = [q.phase for q in next(s for s in results.strategies if s.name == name).phases]
        top = tops[(name, i.index(p.phase))]
        assert top == sorted(top) and near(top[-1], p), (name, p.phase, top, p.latency)

    split = dict(_figures(results))["split"]["data"]
    assert len(split) == 3
    for k, (name, p) in enumerate(phases):
        assert [trace["x"][0][k] for trace in split] == [name] * 3
        assert near(sum(trace["y"][k] for trace in split), p), (name, p.phase, p.latency)
    # the rest is a real share of a threaded pool's operation, not a rounding
    assert any(p.release_mean_us > 0.01 * p.latency.mean_us for _, p in phases), [
        (name, p.phase, p.latency.mean_us, p.release_mean_us) for name, p in phases]


def test_under_rate_the_seed_line_says_it_is_not_meaningful(target: ConnectionTarget,
                                                            table: str) -> None:
    """With --rate both strategies take rows / rate per phase: no gain is printed, and every
    view says why."""
    import json
    from importlib import resources

    import jsonschema

    from poolbench.report.html import report_html
    from poolbench.report.markdown import markdown

    results = run(RunConfig(target=target, strategies=("psycopg2:none", "psycopg2:threaded"),
                            rows=40, workers=2, pool_min=2, pool_max=2, warmup=0, trials=1,
                            table=table, out_dir=None, rate=100.0, connect_samples=1))
    c = results.comparison
    assert c is not None and c.drivers == () and c.not_meaningful is not None
    assert "--rate" in c.not_meaningful
    for text in (_console_text(results), markdown(results), report_html(results)):
        assert "Performance Gain" not in text and "no seed line: with --rate" in text
    schema = json.loads(resources.files("poolbench").joinpath("results.schema.json")
                        .read_text())
    jsonschema.validate(json.loads(json.dumps(results.to_dict())), schema)

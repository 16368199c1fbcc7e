"""What poolbench itself costs on top of a driver and its pool: for each pooled strategy, a
bare loop written with no poolbench code (the same driver, pool, statement and thread/task
count) against poolbench's own read path for the same work, in one run.

Target: poolbench >= 0.95x the bare loop for every pooled strategy.

Method (a paired design, so that the machine's drift, ±30% over minutes on this shared
2-core VM, hits both sides alike): for each strategy, ROUNDS rounds, each one bare
measurement and one poolbench measurement back to back, the order alternating from round
to round (bare first, then poolbench first: ABBA...), each on a fresh pool, warmed
before its clock starts (each thread or task does WARM_OPERATIONS operations first: a
warm-up phase on poolbench's side, as a run's warm-up trial; since 2026-12-02 04:20, so
that no side's window holds the connects of a pool that opens lazily, as SQLAlchemy's
does); a round's figure is its ratio poolbench ops/s / bare ops/s. Reported: the median
of the rounds' ratios with its 95% percentile-bootstrap interval (``scipy.stats.bootstrap``, through
``poolbench.analysis.intervals.median_interval``: 9,999 resamples, seed 0), each side's
median ops/s, and whether the median and the interval's lower end meet the target. An
A/A control runs psycopg2:threaded's bare loop against itself in the same paired way: the
spread of its ratio is the noise floor of the design.

A second, steadier view: this process's CPU time (``time.process_time``: all its threads,
not its child processes) over each measurement's timed loop (its threads' or tasks' start
and end included), per operation, on each side, and per round poolbench's minus the bare
loop's, given as the median with the same bootstrap interval. poolbench's side runs with
the activity sampler on, as a run has it by default; the sampler is a process of its own
and queries the server, so neither its CPU nor its backend's is in the client's figure.
What timing alone costs, for psycopg2:threaded and asyncpg:pool: the bare loop against
itself timed as the executor times each operation (a stop flag looked at, four clock
readings around acquire, execute and release kept in a list: no poolbench code), and
poolbench against that timed loop, each in the same paired way. Under one interpreter's
GIL on 2 cores, the little Python each operation adds costs several times its own CPU
in contention; this splits poolbench's loss into measuring at all and the rest.

Run: python bench/harness_loss.py [seconds per measurement, default 2] [rounds, default 10]
[strategies, comma-separated: only these, no A/A control, into harness_loss_focus.txt]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import asyncpg
import psycopg
import psycopg2.pool
from _common import Report, interval_verdict, seeded_reads
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from poolbench.analysis.intervals import RESAMPLES, Interval, median_interval
from poolbench.config import Pace
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import APPLICATION_NAME
from poolbench.db.workload import RunTable, delete_own_rows
from poolbench.measure.executor import in_process_executor
from poolbench.measure.sampler import DEFAULT_INTERVAL_S, Sampler, ServerProcesses
from poolbench.strategies import StrategySettings, load_strategy
from poolbench.workloads.phase import PhaseSpec

WORKERS = 8
SECONDS = 2.0  # per measurement
ROUNDS = 10  # paired rounds per strategy (and in the A/A control)
# Operations each thread or task does before a measurement's clock starts, on both sides
WARM_OPERATIONS = 20
TARGET = 0.95
STRATEGIES = ("psycopg:pool", "psycopg2:threaded", "asyncpg:pool", "psycopg-async:pool",
              "sqlalchemy:queuepool", "sqlalchemy-asyncpg:queuepool")
CONTROL = "psycopg2:threaded"  # the A/A control's strategy: bare loop against itself
TIMED_KEPT = 4 * 1024  # readings a timed bare loop keeps before starting a new list
SQL = "SELECT id, username, email, created_at FROM users WHERE id = %s"
NUMBERED = SQL.replace("%s", "$1")


@dataclass(frozen=True)
class Measurement:
    """One timed loop: operations done, the wall-clock seconds they took, and this
    process's CPU seconds (all its threads, not its child processes) over the same loop."""

    ops: int
    elapsed_s: float
    cpu_s: float

    @property
    def ops_s(self) -> float:
        return self.ops / self.elapsed_s

    @property
    def cpu_us_per_op(self) -> float:
        return self.cpu_s / self.ops * 1e6


def warm_threads(one: Callable[[int], object], ids: list[int]) -> None:
    """WORKERS threads calling ``one(id)`` WARM_OPERATIONS times each, untimed: the pool's
    connections opened (SQLAlchemy's open as they are first asked for) before the clock."""
    def loop(w: int) -> None:
        for k in range(WARM_OPERATIONS):
            one(ids[(w + k * WORKERS) % len(ids)])
    threads = [threading.Thread(target=loop, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def threaded(seconds: float, one: Callable[[int], object], ids: list[int]) -> Measurement:
    """WORKERS threads calling ``one(id)`` for ``seconds``, after :func:`warm_threads`."""
    warm_threads(one, ids)
    cpu0 = time.process_time()
    counts = [0] * WORKERS
    start = threading.Barrier(WORKERS + 1)
    deadline = [0.0]

    def loop(w: int) -> None:
        start.wait()
        n, i = 0, w
        while time.perf_counter() < deadline[0]:
            one(ids[i % len(ids)])
            n += 1
            i += WORKERS
        counts[w] = n

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return Measurement(sum(counts), elapsed, time.process_time() - cpu0)


async def tasks(seconds: float, one: Callable[[int], object],
                ids: list[int]) -> Measurement:
    """WORKERS tasks awaiting ``one(id)`` for ``seconds``, after WARM_OPERATIONS each
    untimed (as :func:`warm_threads`)."""
    async def warm(w: int) -> None:
        for k in range(WARM_OPERATIONS):
            await one(ids[(w + k * WORKERS) % len(ids)])  # type: ignore[misc]
    await asyncio.gather(*(warm(w) for w in range(WORKERS)))
    cpu0 = time.process_time()
    counts = [0] * WORKERS
    deadline = time.perf_counter() + seconds

    async def loop(w: int) -> None:
        n, i = 0, w
        while time.perf_counter() < deadline:
            await one(ids[i % len(ids)])  # type: ignore[misc]
            n += 1
            i += WORKERS
        counts[w] = n

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(WORKERS)))
    elapsed = time.perf_counter() - t0
    return Measurement(sum(counts), elapsed, time.process_time() - cpu0)


def bare_psycopg_pool(conninfo: str, seconds: float, ids: list[int]) -> Measurement:
    with ConnectionPool(conninfo, min_size=WORKERS, max_size=WORKERS,
                        kwargs={"autocommit": True}) as pool:
        pool.wait()

        def one(i: int) -> object:
            with pool.connection() as conn:
                return conn.execute(SQL, (i,)).fetchone()
        return threaded(seconds, one, ids)


def bare_psycopg2_threaded(conninfo: str, seconds: float, ids: list[int]) -> Measurement:
    pool = psycopg2.pool.ThreadedConnectionPool(WORKERS, WORKERS, conninfo)

    def one(i: int) -> object:
        conn = pool.getconn()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(SQL, (i,))
                return cur.fetchone()
        finally:
            pool.putconn(conn)
    try:
        return threaded(seconds, one, ids)
    finally:
        pool.closeall()


def bare_psycopg2_timed(conninfo: str, seconds: float, ids: list[int]) -> Measurement:
    """:func:`bare_psycopg2_threaded` plus what any load generator that times each operation
    does, and no poolbench code: a stop Event looked at, the clock read around acquire,
    execute and release, the four readings kept in a list (the executor's steps)."""
    pool = psycopg2.pool.ThreadedConnectionPool(WORKERS, WORKERS, conninfo)
    stop, now, kept = threading.Event(), time.perf_counter_ns, []

    def one(i: int) -> object:
        nonlocal kept
        stop.is_set()
        t0 = now()
        conn = pool.getconn()
        t1 = now()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(SQL, (i,))
                row = cur.fetchone()
        finally:
            t2 = now()
            pool.putconn(conn)
        kept += (t0, t1, t2, now())
        if len(kept) > TIMED_KEPT:
            kept = []
        return row
    try:
        return threaded(seconds, one, ids)
    finally:
        pool.closeall()


def bare_sqlalchemy(conninfo: str, seconds: float, ids: list[int]) -> Measurement:
    engine = create_engine("postgresql+psycopg://", connect_args=psycopg.conninfo.conninfo_to_dict(
        conninfo), pool_size=WORKERS, max_overflow=0, isolation_level="AUTOCOMMIT")
    query = text(SQL.replace("%s", ":id"))

    def one(i: int) -> object:
        with engine.connect() as conn:
            return conn.execute(query, {"id": i}).first()
    try:
        return threaded(seconds, one, ids)
    finally:
        engine.dispose()


def bare_asyncpg_pool(kwargs: dict, seconds: float, ids: list[int]) -> Measurement:
    async def main() -> Measurement:
        pool = await asyncpg.create_pool(min_size=WORKERS, max_size=WORKERS, **kwargs)

        async def one(i: int) -> object:
            async with pool.acquire() as conn:
                return await conn.fetchrow(NUMBERED, i)
        try:
            return await tasks(seconds, one, ids)
        finally:
            await pool.close()
    return asyncio.run(main())


def bare_asyncpg_timed(kwargs: dict, seconds: float, ids: list[int]) -> Measurement:
    """:func:`bare_asyncpg_pool` plus the timing steps of :func:`bare_psycopg2_timed`."""
    async def main() -> Measurement:
        pool = await asyncpg.create_pool(min_size=WORKERS, max_size=WORKERS, **kwargs)
        stop, now, kept = threading.Event(), time.perf_counter_ns, []

        async def one(i: int) -> object:
            nonlocal kept
            stop.is_set()
            t0 = now()
            conn = await pool.acquire()
            t1 = now()
            try:
                row = await conn.fetchrow(NUMBERED, i)
            finally:
                t2 = now()
                await pool.release(conn)
            kept += (t0, t1, t2, now())
            if len(kept) > TIMED_KEPT:
                kept = []
            return row
        try:
            return await tasks(seconds, one, ids)
        finally:
            await pool.close()
    return asyncio.run(main())


def bare_psycopg_async_pool(conninfo: str, seconds: float, ids: list[int]) -> Measurement:
    async def main() -> Measurement:
        async with AsyncConnectionPool(conninfo, min_size=WORKERS, max_size=WORKERS,
                                       kwargs={"autocommit": True}) as pool:
            await pool.wait()

            async def one(i: int) -> object:
                async with pool.connection() as conn:
                    return await (await conn.execute(SQL, (i,))).fetchone()
            return await tasks(seconds, one, ids)
    return asyncio.run(main())


def bare_sqlalchemy_asyncpg(kwargs: dict, seconds: float, ids: list[int]) -> Measurement:
    async def main() -> Measurement:
        engine = create_async_engine("postgresql+asyncpg://", connect_args=kwargs,
                                     pool_size=WORKERS, max_overflow=0,
                                     isolation_level="AUTOCOMMIT")
        query = text(SQL.replace("%s", ":id"))

        async def one(i: int) -> object:
            async with engine.connect() as conn:
                return (await conn.execute(query, {"id": i})).first()
        try:
            return await tasks(seconds, one, ids)
        finally:
            await engine.dispose()
    return asyncio.run(main())


def poolbench_read(target, strategy: str, seconds: float, workload: RunTable,
                   ids: list[int], sampler: Sampler) -> Measurement:
    """poolbench's own path for the same work: the strategy on the executor a run uses
    (threads or tasks, its recorders, clock and progress hook), reading the same rows, with
    the activity sampler on as a run has it by default (its own process, every 200 ms).
    The CPU is the client's over the phase (its workers' start and end and the recorders'
    counting included), the wall clock the phase's own."""
    settings = StrategySettings(target=target, workers=WORKERS, pool_min=WORKERS,
                                pool_max=WORKERS, acquire_timeout_s=30.0)
    executor = in_process_executor(load_strategy(strategy), settings, stop=threading.Event())
    spec = PhaseSpec("read", workload.statements()["read"], workload, 0, count=None,
                     ids=tuple(ids), pace=Pace(duration_s=seconds))
    warm = replace(spec, count=WORKERS * WARM_OPERATIONS, pace=Pace())
    executor.open()
    sampler.start()
    try:
        executor.run_phase(warm, lambda n: None)  # untimed, as the bare loops' warm-up
        cpu0 = time.process_time()
        run = executor.run_phase(spec, lambda n: None)
        cpu_s = time.process_time() - cpu0
    finally:
        sampler.stop()
        executor.close()
    return Measurement(sum(r.ok for r in run.recorders), run.elapsed_s, cpu_s)


def paired(first: Callable[[], Measurement], second: Callable[[], Measurement],
           rounds: int) -> list[tuple[Measurement, Measurement]]:
    """``rounds`` pairs (first's measurement, second's), each pair taken back to back,
    ``first`` ahead in even rounds and ``second`` ahead in odd ones (ABBA...), so that a
    drift within the run weighs on both sides alike."""
    pairs = []
    for r in range(rounds):
        if r % 2 == 0:
            a = first()
            b = second()
        else:
            b = second()
            a = first()
        pairs.append((a, b))
    return pairs


@dataclass(frozen=True)
class PairedResult:
    """One strategy's rounds: the median of the per-round ratios (second / first ops/s) and
    of the per-round CPU differences (second - first, µs per operation), each with its
    bootstrap interval; each side's median ops/s and CPU µs per operation."""

    ratio: Interval
    cpu_diff_us: Interval
    first_ops_s: float
    second_ops_s: float
    first_cpu_us: float
    second_cpu_us: float

    @classmethod
    def of(cls, pairs: list[tuple[Measurement, Measurement]]) -> PairedResult:
        return cls(ratio=median_interval([b.ops_s / a.ops_s for a, b in pairs]),
                   cpu_diff_us=median_interval([b.cpu_us_per_op - a.cpu_us_per_op
                                                for a, b in pairs]),
                   first_ops_s=statistics.median(a.ops_s for a, _ in pairs),
                   second_ops_s=statistics.median(b.ops_s for _, b in pairs),
                   first_cpu_us=statistics.median(a.cpu_us_per_op for a, _ in pairs),
                   second_cpu_us=statistics.median(b.cpu_us_per_op for _, b in pairs))


def ratio_text(iv: Interval) -> str:
    if iv.low is None or iv.high is None:
        return f"{iv.value:.2f}x (no interval: one round)"
    return f"{iv.value:.2f}x, 95% interval {iv.low:.2f}..{iv.high:.2f}"


def diff_text(iv: Interval) -> str:
    if iv.low is None or iv.high is None:
        return f"{iv.value:+.1f} µs/op (no interval: one round)"
    return f"{iv.value:+.1f} µs/op, 95% interval {iv.low:+.1f}..{iv.high:+.1f}"


def note(iv: Interval) -> str:
    # median_interval speaks of a sweep's trials; here each figure is a paired round's
    return f" ({iv.note.replace('trials', 'rounds')})" if iv.note else ""


def usage(message: str) -> SystemExit:
    return SystemExit(f"harness_loss: {message}; usage: python bench/harness_loss.py "
                      f"[seconds per measurement > 0, default {SECONDS:g}] "
                      f"[rounds >= 1, default {ROUNDS}] [strategies, comma-separated: "
                      "only these, and no A/A control; written to harness_loss_focus.txt]")


def arguments(argv: list[str]) -> tuple[float, int, list[str] | None]:
    if len(argv) > 3:
        raise usage(f"too many arguments: {' '.join(argv)}")
    try:
        seconds = float(argv[0]) if argv else SECONDS
        rounds = int(argv[1]) if len(argv) > 1 else ROUNDS
    except ValueError as e:
        raise usage(f"not a number: {e}") from None
    if not seconds > 0 or rounds < 1:
        raise usage(f"seconds {seconds:g}, rounds {rounds}")
    only = argv[2].split(",") if len(argv) > 2 else None
    if only is not None and (unknown := set(only) - set(STRATEGIES)):
        raise usage(f"not a strategy measured here: {', '.join(sorted(unknown))}")
    return seconds, rounds, only


def main() -> None:
    seconds, rounds, only = arguments(sys.argv[1:])
    report = Report("harness_loss" if only is None else "harness_loss_focus")
    report.line(f"point reads by id of the same 10,000 rows, {WORKERS} threads or tasks, "
                f"pools of {WORKERS} (a fresh pool per measurement), {seconds:g} s per "
                f"measurement; poolbench's side with the activity sampler on (its own process, "
                f"every {DEFAULT_INTERVAL_S * 1000:.0f} ms), as a run has it by default")
    report.line(f"paired design: per strategy {rounds} rounds, each one bare and one poolbench "
                "measurement back to back, the order alternating (bare first in even rounds, "
                "poolbench first in odd ones); a round's figure is poolbench ops/s / bare "
                "ops/s; given: the median of the rounds' ratios with its 95% percentile-"
                f"bootstrap interval (scipy.stats.bootstrap, {RESAMPLES:,} resamples, seed 0), "
                "and each side's median ops/s")
    report.line("client CPU: this process's time.process_time (all its threads, not its "
                "child processes) over each timed loop, per operation; median per side, and "
                "the median of the rounds' poolbench minus bare with the same bootstrap "
                "interval; the activity sampler (poolbench's side only) runs in a process of "
                "its own and its queries in a server backend: neither's CPU is counted here")
    with EmbeddedServer(max_connections=100) as server:
        target = server.target
        conninfo = target.conninfo()
        kwargs = target.asyncpg_kwargs()
        admin, workload, ids = seeded_reads(target)
        sampler = Sampler(target, (APPLICATION_NAME,), DEFAULT_INTERVAL_S,
                          server=ServerProcesses.find(data_dir=str(server.data_dir),
                                                      port=int(target.get("port") or 5432)))
        bare = {"psycopg:pool": lambda: bare_psycopg_pool(conninfo, seconds, ids),
                "psycopg2:threaded": lambda: bare_psycopg2_threaded(conninfo, seconds, ids),
                "asyncpg:pool": lambda: bare_asyncpg_pool(kwargs, seconds, ids),
                "psycopg-async:pool": lambda: bare_psycopg_async_pool(conninfo, seconds, ids),
                "sqlalchemy:queuepool": lambda: bare_sqlalchemy(conninfo, seconds, ids),
                "sqlalchemy-asyncpg:queuepool":
                    lambda: bare_sqlalchemy_asyncpg(kwargs, seconds, ids)}
        def ours(strategy: str) -> Callable[[], Measurement]:
            """poolbench's side of a pair, for ``strategy``."""
            return lambda: poolbench_read(target, strategy, seconds, workload, ids, sampler)

        results: dict[str, PairedResult] = {}
        for strategy, loop in bare.items():
            if only is not None and strategy not in only:
                continue
            res = results[strategy] = PairedResult.of(paired(loop, ours(strategy), rounds))
            report.line(f"  {strategy:<30} poolbench/bare {ratio_text(res.ratio)} (median of "
                        f"{rounds} paired rounds; medians: bare {res.first_ops_s:,.0f} ops/s, "
                        f"poolbench {res.second_ops_s:,.0f} ops/s); target >= {TARGET}x: "
                        f"{interval_verdict(res.ratio, TARGET)}{note(res.ratio)}")
            report.line(f"  {'':<30} client CPU: bare {res.first_cpu_us:.1f} µs/op, poolbench "
                        f"{res.second_cpu_us:.1f} µs/op (medians); poolbench - bare "
                        f"{diff_text(res.cpu_diff_us)} (median of the rounds' differences)")
        timed = {"psycopg2:threaded": lambda: bare_psycopg2_timed(conninfo, seconds, ids),
                 "asyncpg:pool": lambda: bare_asyncpg_timed(kwargs, seconds, ids)}
        for strategy, timed_loop in timed.items():
            if strategy not in results:
                continue
            cost = PairedResult.of(paired(bare[strategy], timed_loop, rounds))
            rest = PairedResult.of(paired(timed_loop, ours(strategy), rounds))
            report.line(f"  {strategy:<30} what timing alone costs: the bare loop timed as the "
                        "executor times (a stop flag looked at, four clock readings kept in a "
                        f"list, no poolbench code) / the bare loop {ratio_text(cost.ratio)}, "
                        f"client CPU {diff_text(cost.cpu_diff_us)}{note(cost.ratio)}; "
                        f"poolbench / that timed loop {ratio_text(rest.ratio)}, client CPU "
                        f"{diff_text(rest.cpu_diff_us)} ({rounds} paired rounds each)")
        if only is None:
            aa = PairedResult.of(paired(bare[CONTROL], bare[CONTROL], rounds))
            report.line(f"A/A control, the noise floor of this design: {CONTROL}'s bare loop "
                        f"against itself, {rounds} paired rounds the same way: second/first "
                        f"{ratio_text(aa.ratio)} (medians {aa.first_ops_s:,.0f} and "
                        f"{aa.second_ops_s:,.0f} ops/s){note(aa.ratio)}; client CPU second - "
                        f"first {diff_text(aa.cpu_diff_us)}")
        sampler.close()
        admin.call(lambda c: delete_own_rows(c, "users", workload.prefix))
        admin.close()
    worst_name, worst = min(results.items(), key=lambda kv: kv[1].ratio.value)
    report.line(f"worst median ratio: {worst_name}, poolbench/bare {ratio_text(worst.ratio)} "
                f"(target >= {TARGET}x: {interval_verdict(worst.ratio, TARGET)})"
                f"{note(worst.ratio)}")
    report.save()


if __name__ == "__main__":
    main()

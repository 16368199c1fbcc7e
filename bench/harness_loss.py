"""What poolbench itself costs on top of a driver and its pool: for each pooled strategy, a
bare loop written with no poolbench code (the same driver, pool, statement and thread/task
count) against poolbench's own read throughput for the same work, in one run.

Target: poolbench >= 0.95x the bare loop for every pooled strategy. Each side runs five
times, alternating, and the best of each is kept (noise on a shared machine only slows).
Run: python bench/harness_loss.py [seconds per measurement, default 2]
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable

import asyncpg
import psycopg
import psycopg2.pool
from _common import Report, seeded_reads
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from poolbench.config import Pace
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import APPLICATION_NAME
from poolbench.db.workload import RunTable, delete_own_rows
from poolbench.measure.executor import in_process_executor
from poolbench.measure.sampler import DEFAULT_INTERVAL_S, Sampler, ServerProcesses
from poolbench.strategies import StrategySettings, load_strategy
from poolbench.workloads.phase import PhaseSpec

WORKERS = 8
ROUNDS = 5  # alternating measurements per side; the best of each is kept
SQL = "SELECT id, username, email, created_at FROM users WHERE id = %s"
NUMBERED = SQL.replace("%s", "$1")


def threaded(seconds: float, one: Callable[[int], object], ids: list[int]) -> float:
    """WORKERS threads calling ``one(id)`` for ``seconds``; operations per second."""
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
    return sum(counts) / (time.perf_counter() - t0)


async def tasks(seconds: float, one: Callable[[int], object], ids: list[int]) -> float:
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
    return sum(counts) / (time.perf_counter() - t0)


def bare_psycopg_pool(conninfo: str, seconds: float, ids: list[int]) -> float:
    with ConnectionPool(conninfo, min_size=WORKERS, max_size=WORKERS,
                        kwargs={"autocommit": True}) as pool:
        pool.wait()

        def one(i: int) -> object:
            with pool.connection() as conn:
                return conn.execute(SQL, (i,)).fetchone()
        return threaded(seconds, one, ids)


def bare_psycopg2_threaded(conninfo: str, seconds: float, ids: list[int]) -> float:
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


def bare_sqlalchemy(conninfo: str, seconds: float, ids: list[int]) -> float:
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


def bare_asyncpg_pool(kwargs: dict, seconds: float, ids: list[int]) -> float:
    async def main() -> float:
        pool = await asyncpg.create_pool(min_size=WORKERS, max_size=WORKERS, **kwargs)

        async def one(i: int) -> object:
            async with pool.acquire() as conn:
                return await conn.fetchrow(NUMBERED, i)
        try:
            return await tasks(seconds, one, ids)
        finally:
            await pool.close()
    return asyncio.run(main())


def bare_psycopg_async_pool(conninfo: str, seconds: float, ids: list[int]) -> float:
    async def main() -> float:
        async with AsyncConnectionPool(conninfo, min_size=WORKERS, max_size=WORKERS,
                                       kwargs={"autocommit": True}) as pool:
            await pool.wait()

            async def one(i: int) -> object:
                async with pool.connection() as conn:
                    return await (await conn.execute(SQL, (i,))).fetchone()
            return await tasks(seconds, one, ids)
    return asyncio.run(main())


def bare_sqlalchemy_asyncpg(kwargs: dict, seconds: float, ids: list[int]) -> float:
    async def main() -> float:
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
                   ids: list[int], sampler: Sampler) -> float:
    """poolbench's own path for the same work: the strategy on the executor a run uses
    (threads or tasks, its recorders, clock and progress hook), reading the same rows, with
    the activity sampler on as a run has it by default (its own process, every 200 ms)."""
    settings = StrategySettings(target=target, workers=WORKERS, pool_min=WORKERS,
                                pool_max=WORKERS, acquire_timeout_s=30.0)
    executor = in_process_executor(load_strategy(strategy), settings, stop=threading.Event())
    spec = PhaseSpec("read", workload.statements()["read"], workload, 0, count=None,
                     ids=tuple(ids), pace=Pace(duration_s=seconds))
    executor.open()
    sampler.start()
    try:
        run = executor.run_phase(spec, lambda n: None)
    finally:
        sampler.stop()
        executor.close()
    return sum(r.ok for r in run.recorders) / run.elapsed_s


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    report = Report("harness_loss")
    report.line(f"point reads by id of the same 10,000 rows, {WORKERS} threads or tasks, "
                f"pools of {WORKERS}, {seconds:g} s per measurement, best of {ROUNDS} "
                "alternating runs per side; poolbench's side with the activity sampler on "
                f"(its own process, every {DEFAULT_INTERVAL_S * 1000:.0f} ms), as a run has it by "
                "default")
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
        worst = 1.0
        for strategy, loop in bare.items():
            ours, theirs = [], []
            for _ in range(ROUNDS):
                theirs.append(loop())
                ours.append(poolbench_read(target, strategy, seconds, workload, ids, sampler))
            ratio = max(ours) / max(theirs)
            worst = min(worst, ratio)
            report.line(f"  {strategy:<30} bare loop {max(theirs):>8,.0f} ops/s, poolbench "
                        f"{max(ours):>8,.0f} ops/s = {ratio:.2f}x (target >= 0.95x)")
        sampler.close()
        admin.call(lambda c: delete_own_rows(c, "users", workload.prefix))
        admin.close()
    report.line(f"worst: {worst:.2f}x the bare loop (target >= 0.95x)")
    report.save()


if __name__ == "__main__":
    main()

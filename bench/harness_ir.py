"""harness_loss's gap in instructions, not time: run under callgrind, each measured region
inside ``sys.call_tracing`` (callgrind counts only there and dumps as each returns), so
setup is not counted and the machine's varying speed does not matter.

Per strategy, N operations on 8 threads or tasks, four ways: the bare loop (harness_loss's
``one``); the strategy's acquire/execute/release in the same loop; ``call_operation`` /
``await_operation`` (timing, record, row check) in the same loop; poolbench's executor
(``run_phase``, count N). Then record, source.next and settle alone, N calls each.

Run (the real interpreter, not a pyenv shim):
  valgrind --tool=callgrind --collect-atstart=no --toggle-collect=sys_call_tracing \\
    --dump-after=sys_call_tracing --dump-instr=no --callgrind-out-file=/tmp/hir/cg.out \\
    PYTHON bench/harness_ir.py N > /tmp/hir/regions.txt
then: python bench/harness_ir.py --sum /tmp/hir
"""

from __future__ import annotations

import asyncio
import glob
import re
import sys
import threading
import time

N_DEFAULT = 800
WORKERS = 8


def main(n: int) -> None:
    import asyncpg
    import harness_loss as hl
    import psycopg
    import psycopg2.pool
    from _common import pieces_alone, seeded_reads
    from sqlalchemy import create_engine, text

    from poolbench.db.server import EmbeddedServer
    from poolbench.db.workload import delete_own_rows
    from poolbench.measure.executor import (
        await_operation,
        call_operation,
        in_process_executor,
    )
    from poolbench.measure.metrics import OperationRecorder, PhaseSink, now_ns
    from poolbench.strategies import StrategySettings, load_strategy
    from poolbench.workloads.phase import PhaseSpec

    regions: list[tuple[str, int, int]] = []  # (name, dumps it makes, operations)

    def region(name: str, dumps: int, ops: int) -> None:
        regions.append((name, dumps, ops))
        print(f"{name}\t{dumps}\t{ops}", flush=True)

    def threaded(one, ids, count, collect=True):
        per = count // WORKERS

        def loop(w):
            i = w
            for _ in range(per):
                time.perf_counter()  # the bare loop's deadline check
                one(ids[i % len(ids)])
                i += WORKERS
        threads = [threading.Thread(
            target=(lambda w=w: sys.call_tracing(loop, (w,))) if collect else
            (lambda w=w: loop(w))) for w in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return per * WORKERS

    async def tasks(one, ids, count):
        per = count // WORKERS

        async def loop(w):
            i = w
            for _ in range(per):
                time.perf_counter()
                await one(ids[i % len(ids)])
                i += WORKERS
        await asyncio.gather(*(loop(w) for w in range(WORKERS)))
        return per * WORKERS

    with EmbeddedServer(max_connections=100) as server:
        target = server.target
        conninfo = target.conninfo()
        kwargs = target.asyncpg_kwargs()
        admin, workload, ids = seeded_reads(target)
        statement = workload.statements()["read"]
        settings = StrategySettings(target=target, workers=WORKERS, pool_min=WORKERS,
                                    pool_max=WORKERS, acquire_timeout_s=30.0)

        def executor_region(name):
            ex = in_process_executor(load_strategy(name), settings, stop=threading.Event())
            ex.open()
            try:
                warm = PhaseSpec("read", statement, workload, 0, count=WORKERS * 20,
                                 ids=tuple(ids))
                ex.run_phase(warm, lambda k: None)
                spec = PhaseSpec("read", statement, workload, 0, count=n, ids=tuple(ids))
                if ex.strategy.is_async:
                    run = sys.call_tracing(ex.run_phase, (spec, lambda k: None))
                    region(f"{name}\texecutor", 1, sum(r.ok for r in run.recorders))
                else:
                    pool = ex._threads
                    submit = pool.submit
                    pool.submit = lambda fn: submit(lambda: sys.call_tracing(fn, ()))
                    run = ex.run_phase(spec, lambda k: None)
                    pool.submit = submit
                    region(f"{name}\texecutor", WORKERS, sum(r.ok for r in run.recorders))
            finally:
                ex.close()

        # -- asyncpg:pool
        async def asyncpg_ladder():
            st = load_strategy("asyncpg:pool")(settings)
            await st.open()
            pool = await asyncpg.create_pool(min_size=WORKERS, max_size=WORKERS, **kwargs)
            sink = PhaseSink()
            recs: dict[object, OperationRecorder] = {}

            async def bare(i):
                async with pool.acquire() as conn:
                    return await conn.fetchrow(hl.NUMBERED, i)

            async def strategy(i):
                c = await st.acquire()
                await st.execute(c, statement, (i,))
                await st.release(c)

            async def operation(i):
                task = asyncio.current_task()
                rec = recs.get(task)
                if rec is None:
                    rec = recs[task] = OperationRecorder(30.0, "", sink)
                    rec.origin_ns = now_ns()
                await await_operation(st, statement, (i,), rec)
            try:
                for kind, one in (("bare", bare), ("strategy", strategy),
                                  ("operation", operation)):
                    await tasks(one, ids, WORKERS * 20)  # warm
                    yield kind, one
            finally:
                await pool.close()
                await st.close()

        loop = asyncio.new_event_loop()
        gen = asyncpg_ladder()
        try:
            while True:
                kind, one = loop.run_until_complete(gen.__anext__())
                done = sys.call_tracing(loop.run_until_complete, (tasks(one, ids, n),))
                region(f"asyncpg:pool\t{kind}", 1, done)
        except StopAsyncIteration:
            pass
        loop.close()
        executor_region("asyncpg:pool")

        # -- psycopg2:threaded and sqlalchemy:queuepool
        def sync_ladder(name, bare):
            st = load_strategy(name)(settings)
            st.open()
            sink = PhaseSink()
            local = threading.local()

            def strategy(i):
                c = st.acquire()
                st.execute(c, statement, (i,))
                st.release(c)

            def operation(i):
                rec = getattr(local, "rec", None)
                if rec is None:
                    rec = local.rec = OperationRecorder(30.0, "", sink)
                    rec.origin_ns = now_ns()
                call_operation(st, statement, (i,), rec)
            try:
                for kind, one in (("bare", bare), ("strategy", strategy),
                                  ("operation", operation)):
                    threaded(one, ids, WORKERS * 20, collect=False)  # warm
                    done = threaded(one, ids, n)
                    region(f"{name}\t{kind}", WORKERS, done)
            finally:
                st.close()
            executor_region(name)

        p2 = psycopg2.pool.ThreadedConnectionPool(WORKERS, WORKERS, conninfo)

        def p2_one(i):
            conn = p2.getconn()
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(hl.SQL, (i,))
                    return cur.fetchone()
            finally:
                p2.putconn(conn)
        sync_ladder("psycopg2:threaded", p2_one)
        p2.closeall()
        engine = create_engine("postgresql+psycopg://", connect_args=psycopg.conninfo
                               .conninfo_to_dict(conninfo), pool_size=WORKERS,
                               max_overflow=0, isolation_level="AUTOCOMMIT")
        query = text(hl.SQL.replace("%s", ":id"))

        def sa_one(i):
            with engine.connect() as conn:
                return conn.execute(query, {"id": i}).first()
        sync_ladder("sqlalchemy:queuepool", sa_one)
        engine.dispose()

        # -- pieces alone
        fns = pieces_alone(workload, ids)
        for name in ("empty loop", "record", "source.next", "settle"):
            fn = fns[name]
            sys.call_tracing(fn, (n * 10,))
            region(f"alone\t{name}", 1, n * 10)
        admin.call(lambda c: delete_own_rows(c, "users", workload.prefix))
        admin.close()


def total(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    return 0


def summarise(folder: str) -> None:
    """Instructions per operation of each region, in the order the dumps were made."""
    files = sorted(glob.glob(f"{folder}/cg.out.*"),
                   key=lambda p: int(re.search(r"\.(\d+)$", p).group(1)))
    counts = [total(p) for p in files]
    with open(f"{folder}/regions.txt") as f:
        regions = [line.rstrip("\n").split("\t") for line in f if line.count("\t") >= 2]
    at = 0
    for *name, dumps, ops in regions:
        got = sum(counts[at:at + int(dumps)])
        at += int(dumps)
        print(f"{' '.join(name):<40} {got / int(ops):>12,.0f} instructions/op ({ops} ops)")
    if at != len(counts):
        print(f"warning: {len(counts)} dumps, {at} accounted for")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sum"]:
        summarise(sys.argv[2])
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else N_DEFAULT)

"""Where harness_loss's gap comes from: CPU per operation, not wall time.

Part 1, as harness_loss runs (8 threads or tasks, pools of 8): per side (bare loop,
poolbench with the sampler off, poolbench with it on), ops/s, the client's CPU per
operation (process_time), the server's (its postmaster and backends) and the sampler's, and
the machine's idle share (/proc/stat): which of them is the bottleneck, and what each side
spends per operation.

Part 2, one worker (no GIL or event-loop contention), CPU µs per operation of each layer,
by difference: the bare loop; the strategy's acquire/execute/release called directly; the
same through ``call_operation``/``await_operation`` (timing, recording, row check); the
executor's whole worker loop (source.next, settle, progress); and, alone, ``record``,
``source.next`` and ``settle`` on synthetic input.

Run: python bench/harness_attrib.py [seconds per measurement, default 3] [rounds, default 3]
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import sys
import threading
import time

import harness_loss as hl
import psutil
from _common import Report, pieces_alone, seeded_reads

from poolbench.config import Pace
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import APPLICATION_NAME
from poolbench.db.workload import delete_own_rows
from poolbench.measure.executor import (
    await_operation,
    call_operation,
    in_process_executor,
)
from poolbench.measure.metrics import OperationRecorder, PhaseSink, now_ns
from poolbench.measure.sampler import Sampler, ServerProcesses
from poolbench.strategies import StrategySettings, load_strategy
from poolbench.workloads.phase import PhaseSpec

STRATEGIES = ("asyncpg:pool", "psycopg2:threaded", "sqlalchemy:queuepool")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class Meter:
    """CPU of this process, the server and the sampler, and the machine's busy share, around a
    measured loop."""

    def __init__(self, server: ServerProcesses, sampler_pid: int | None) -> None:
        self.server = server
        self.sampler = psutil.Process(sampler_pid) if sampler_pid else None

    def server_cpu(self) -> float:
        pm = self.server.postmaster
        if pm is None:
            return 0.0
        t = pm.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in pm.children():
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
        return total

    def read(self) -> tuple[float, float, float, float, float, float]:
        sc = 0.0
        if self.sampler is not None:
            t = self.sampler.cpu_times()
            sc = t.user + t.system
        busy, total = machine_busy()
        return (time.perf_counter(), time.process_time(), self.server_cpu(), sc, busy, total)

    @staticmethod
    def diff(a, b, ops: int) -> dict[str, float]:
        wall = b[0] - a[0]
        return {"ops_s": ops / wall, "client_us": (b[1] - a[1]) / ops * 1e6,
                "server_us": (b[2] - a[2]) / ops * 1e6, "sampler_us": (b[3] - a[3]) / ops * 1e6,
                "busy": (b[4] - a[4]) / max(b[5] - a[5], 1), "ops": ops}


METER: Meter | None = None
LAST: dict[str, float] = {}


def metered_threaded(seconds, one, ids):
    counts = [0] * hl.WORKERS
    start = threading.Barrier(hl.WORKERS + 1)
    deadline = [0.0]

    def loop(w: int) -> None:
        start.wait()
        n, i = 0, w
        while time.perf_counter() < deadline[0]:
            one(ids[i % len(ids)])
            n += 1
            i += hl.WORKERS
        counts[w] = n

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(hl.WORKERS)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    a = METER.read()
    start.wait()
    for t in threads:
        t.join()
    LAST.update(Meter.diff(a, METER.read(), sum(counts)))
    return LAST["ops_s"]


async def metered_tasks(seconds, one, ids):
    counts = [0] * hl.WORKERS
    deadline = time.perf_counter() + seconds

    async def loop(w: int) -> None:
        n, i = 0, w
        while time.perf_counter() < deadline:
            await one(ids[i % len(ids)])
            n += 1
            i += hl.WORKERS
        counts[w] = n

    a = METER.read()
    await asyncio.gather(*(loop(w) for w in range(hl.WORKERS)))
    LAST.update(Meter.diff(a, METER.read(), sum(counts)))
    return LAST["ops_s"]


hl.threaded = metered_threaded
hl.tasks = metered_tasks


def poolbench_side(target, strategy, seconds, workload, ids, sampler, profile=None):
    settings = StrategySettings(target=target, workers=hl.WORKERS, pool_min=hl.WORKERS,
                                pool_max=hl.WORKERS, acquire_timeout_s=30.0)
    executor = in_process_executor(load_strategy(strategy), settings, stop=threading.Event())
    spec = PhaseSpec("read", workload.statements()["read"], workload, 0, count=None,
                     ids=tuple(ids), pace=Pace(duration_s=seconds))
    executor.open()
    if sampler is not None:
        sampler.start()
    try:
        a = METER.read()
        if profile is not None:  # this thread (the event loop) and every worker thread
            def hook(frame, event, arg):
                prof = cProfile.Profile()
                profile.append(prof)
                prof.enable()  # replaces this hook in the thread
            threading.setprofile(hook)
            mine = cProfile.Profile()
            profile.append(mine)
            mine.enable()
        run = executor.run_phase(spec, lambda n: None)
        if profile is not None:
            mine.disable()
            threading.setprofile(None)
        b = METER.read()
    finally:
        if sampler is not None:
            sampler.stop()
        executor.close()
    ops = sum(r.ok for r in run.recorders)
    return Meter.diff(a, b, ops)


# -- part 2: one worker, layer by layer -------------------------------------------------

def cpu_per_op(fn, n: int) -> float:
    t = time.process_time()
    fn(n)
    return (time.process_time() - t) / n * 1e6


def sync_layers(strategy_name, target, workload, ids, n, bare_one):
    settings = StrategySettings(target=target, workers=1, pool_min=1, pool_max=1,
                                acquire_timeout_s=30.0)
    strategy = load_strategy(strategy_name)(settings)
    strategy.open()
    statement = workload.statements()["read"]
    out = {}
    try:
        def bare(k):
            for j in range(k):
                bare_one(ids[j % len(ids)])

        def direct(k):
            acq, ex, rel = strategy.acquire, strategy.execute, strategy.release
            for j in range(k):
                c = acq()
                ex(c, statement, (ids[j % len(ids)],))
                rel(c)

        def via_call(k):
            rec = OperationRecorder(30.0, "", PhaseSink())
            rec.origin_ns = now_ns()
            for j in range(k):
                call_operation(strategy, statement, (ids[j % len(ids)],), rec)

        for _ in range(2):  # warm, then measured (the second pass is kept)
            out["bare"] = cpu_per_op(bare, n)
            out["strategy direct"] = cpu_per_op(direct, n)
            out["call_operation"] = cpu_per_op(via_call, n)
    finally:
        strategy.close()
    ex = in_process_executor(load_strategy(strategy_name), settings, stop=threading.Event())
    ex.open()
    try:
        for _ in range(2):
            spec = PhaseSpec("read", statement, workload, 0, count=n, ids=tuple(ids))
            t = time.process_time()
            run = ex.run_phase(spec, lambda k: None)
            ops = sum(r.ok for r in run.recorders)
            out["executor loop"] = (time.process_time() - t) / ops * 1e6
    finally:
        ex.close()
    return out


def async_layers(strategy_name, target, workload, ids, n, kwargs):
    import asyncpg
    settings = StrategySettings(target=target, workers=1, pool_min=1, pool_max=1,
                                acquire_timeout_s=30.0)
    statement = workload.statements()["read"]
    out = {}

    async def main():
        strategy = load_strategy(strategy_name)(settings)
        await strategy.open()
        pool = await asyncpg.create_pool(min_size=1, max_size=1, **kwargs)

        async def bare(k):
            for j in range(k):
                async with pool.acquire() as conn:
                    await conn.fetchrow(hl.NUMBERED, ids[j % len(ids)])

        async def bare_fetchval(k):
            for j in range(k):
                async with pool.acquire() as conn:
                    await conn.fetchval(hl.NUMBERED, ids[j % len(ids)])

        async def direct(k):
            acq, ex, rel = strategy.acquire, strategy.execute, strategy.release
            for j in range(k):
                c = await acq()
                await ex(c, statement, (ids[j % len(ids)],))
                await rel(c)

        async def via_await(k):
            rec = OperationRecorder(30.0, "", PhaseSink())
            rec.origin_ns = now_ns()
            for j in range(k):
                await await_operation(strategy, statement, (ids[j % len(ids)],), rec)

        async def timed(fn, k):
            t = time.process_time()
            await fn(k)
            return (time.process_time() - t) / k * 1e6
        try:
            for _ in range(2):
                out["bare"] = await timed(bare, n)
                out["bare, fetchval"] = await timed(bare_fetchval, n)
                out["strategy direct"] = await timed(direct, n)
                out["call_operation"] = await timed(via_await, n)
        finally:
            await pool.close()
            await strategy.close()
    asyncio.run(main())
    ex = in_process_executor(load_strategy(strategy_name), settings, stop=threading.Event())
    ex.open()
    try:
        for _ in range(2):
            spec = PhaseSpec("read", statement, workload, 0, count=n, ids=tuple(ids))
            t = time.process_time()
            run = ex.run_phase(spec, lambda k: None)
            ops = sum(r.ok for r in run.recorders)
            out["executor loop"] = (time.process_time() - t) / ops * 1e6
    finally:
        ex.close()
    return out


def alone(workload, ids, n):
    """record, source.next, settle, stop.is_set and a clock read alone, µs per call."""
    fns = pieces_alone(workload, ids)
    base = cpu_per_op(fns.pop("empty loop"), n)
    return {name: cpu_per_op(fn, n) - base for name, fn in fns.items()}


def main() -> None:
    global METER
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    parts = sys.argv[3].split(",") if len(sys.argv) > 3 else ["1", "2", "3"]
    report = Report("harness_attrib" + ("" if len(parts) == 3 else "_" + "".join(parts)))
    with EmbeddedServer(max_connections=100) as server:
        target = server.target
        conninfo = target.conninfo()
        kwargs = target.asyncpg_kwargs()
        admin, workload, ids = seeded_reads(target)
        procs = ServerProcesses.find(data_dir=str(server.data_dir),
                                     port=int(target.get("port") or 5432))
        sampler = Sampler(target, (APPLICATION_NAME,), 0.1, server=procs)
        METER = Meter(procs, sampler.pid)
        if "1" in parts:
            part1(report, target, conninfo, kwargs, workload, ids, sampler, seconds, rounds)
        if "2" in parts:
            part2(report, target, conninfo, kwargs, workload, ids)
        if "3" in parts:
            part3(report, target, workload, ids, seconds)
        if "4" in parts:
            part4(report, target, conninfo, kwargs, workload, ids, seconds, rounds)
        sampler.close()
        admin.call(lambda c: delete_own_rows(c, "users", workload.prefix))
        admin.close()
    report.save()


def part1(report, target, conninfo, kwargs, workload, ids, sampler, seconds, rounds):
    bare = {"asyncpg:pool": lambda: hl.bare_asyncpg_pool(kwargs, seconds, ids),
            "psycopg2:threaded": lambda: hl.bare_psycopg2_threaded(conninfo, seconds, ids),
            "sqlalchemy:queuepool": lambda: hl.bare_sqlalchemy(conninfo, seconds, ids)}
    report.line(f"part 1: {hl.WORKERS} workers, {seconds:g} s each, {rounds} alternating "
                "rounds; medians. µs of CPU per operation: client (this process), server "
                "(postmaster + backends), sampler (its process); busy = machine CPU busy share")
    for name in STRATEGIES:
        rows: dict[str, list[dict[str, float]]] = {"bare": [], "pb, sampler off": [],
                                                   "pb, sampler on": []}
        for _ in range(rounds):
            bare[name]()
            rows["bare"].append(dict(LAST))
            rows["pb, sampler off"].append(poolbench_side(target, name, seconds, workload,
                                                          ids, None))
            rows["pb, sampler on"].append(poolbench_side(target, name, seconds, workload,
                                                         ids, sampler))
        for side, found in rows.items():
            med = {k: sorted(r[k] for r in found)[len(found) // 2] for k in found[0]}
            best = max(r["ops_s"] for r in found)
            report.line(f"  {name:<22} {side:<16} best {best:>7,.0f} ops/s, median "
                        f"{med['ops_s']:>7,.0f}; client {med['client_us']:6.1f} µs/op, "
                        f"server {med['server_us']:6.1f}, sampler {med['sampler_us']:5.2f}, "
                        f"busy {med['busy']:.0%}")


def part2(report, target, conninfo, kwargs, workload, ids):
    import psycopg
    import psycopg2.pool
    from sqlalchemy import create_engine, text
    report.line("part 2: one worker, CPU µs per operation of the client (second of two "
                "passes)")
    n = 3000
    p2 = psycopg2.pool.ThreadedConnectionPool(1, 1, conninfo)

    def p2_one(i):
        conn = p2.getconn()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(hl.SQL, (i,))
                return cur.fetchone()
        finally:
            p2.putconn(conn)
    engine = create_engine("postgresql+psycopg://",
                           connect_args=psycopg.conninfo.conninfo_to_dict(conninfo),
                           pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT")
    query = text(hl.SQL.replace("%s", ":id"))

    def sa_one(i):
        with engine.connect() as conn:
            return conn.execute(query, {"id": i}).first()
    layers = {"asyncpg:pool": async_layers("asyncpg:pool", target, workload, ids, n, kwargs),
              "psycopg2:threaded": sync_layers("psycopg2:threaded", target, workload, ids,
                                               n, p2_one),
              "sqlalchemy:queuepool": sync_layers("sqlalchemy:queuepool", target, workload,
                                                  ids, n, sa_one)}
    p2.closeall()
    engine.dispose()
    for name, found in layers.items():
        report.line(f"  {name:<22} " + ", ".join(f"{k} {v:.1f}" for k, v in found.items()))
    report.line("  alone (µs per call): " + ", ".join(
        f"{k} {v:.2f}" for k, v in alone(workload, ids, 200_000).items()))


def ladder_asyncpg(kind, target, kwargs, workload, ids, seconds):
    import asyncpg
    statement = workload.statements()["read"]
    settings = StrategySettings(target=target, workers=hl.WORKERS, pool_min=hl.WORKERS,
                                pool_max=hl.WORKERS, acquire_timeout_s=30.0)

    async def main():
        st = load_strategy("asyncpg:pool")(settings)
        await st.open()
        pool = await asyncpg.create_pool(min_size=hl.WORKERS, max_size=hl.WORKERS, **kwargs)
        sink = PhaseSink()
        recs = {}

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
            await await_operation(st, statement, (i,), rec)
        try:
            return await hl.tasks(seconds, {"bare": bare, "strategy": strategy,
                                            "await_operation": operation}[kind], ids)
        finally:
            await pool.close()
            await st.close()
    asyncio.run(main())
    return dict(LAST)


def ladder_psycopg2(kind, target, conninfo, workload, ids, seconds):
    import psycopg2.pool
    statement = workload.statements()["read"]
    settings = StrategySettings(target=target, workers=hl.WORKERS, pool_min=hl.WORKERS,
                                pool_max=hl.WORKERS, acquire_timeout_s=30.0)
    st = load_strategy("psycopg2:threaded")(settings)
    st.open()
    pool = psycopg2.pool.ThreadedConnectionPool(hl.WORKERS, hl.WORKERS, conninfo)
    sink = PhaseSink()
    local = threading.local()

    def bare(i):
        conn = pool.getconn()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(hl.SQL, (i,))
                return cur.fetchone()
        finally:
            pool.putconn(conn)

    def strategy(i):
        c = st.acquire()
        st.execute(c, statement, (i,))
        st.release(c)

    def operation(i):
        rec = getattr(local, "rec", None)
        if rec is None:
            rec = local.rec = OperationRecorder(30.0, "", sink)
        call_operation(st, statement, (i,), rec)
    try:
        hl.threaded(seconds, {"bare": bare, "strategy": strategy,
                              "await_operation": operation}[kind], ids)
    finally:
        pool.closeall()
        st.close()
    return dict(LAST)


def part4(report, target, conninfo, kwargs, workload, ids, seconds, rounds):
    report.line(f"part 4: a ladder from the bare loop to poolbench, {hl.WORKERS} workers, "
                f"{seconds:g} s each, {rounds} interleaved rounds, sampler off: bare; the "
                "strategy's acquire/execute/release in the bare loop; call_operation/"
                "await_operation (timing, record, row check) in the bare loop; the executor. "
                "Client CPU µs/op: median [min-max]; ops/s median")
    for name in ("asyncpg:pool", "psycopg2:threaded"):
        found: dict[str, list[dict[str, float]]] = {}
        for _ in range(rounds):
            for kind in ("bare", "strategy", "await_operation", "executor"):
                if kind == "executor":
                    d = poolbench_side(target, name, seconds, workload, ids, None)
                elif name == "asyncpg:pool":
                    d = ladder_asyncpg(kind, target, kwargs, workload, ids, seconds)
                else:
                    d = ladder_psycopg2(kind, target, conninfo, workload, ids, seconds)
                found.setdefault(kind, []).append(d)
        for kind, ds in found.items():
            cpu = sorted(d["client_us"] for d in ds)
            ops = sorted(d["ops_s"] for d in ds)
            srv = sorted(d["server_us"] for d in ds)
            report.line(f"  {name:<18} {kind:<16} client {cpu[len(cpu) // 2]:6.1f} "
                        f"[{cpu[0]:.1f}-{cpu[-1]:.1f}] µs/op, server {srv[len(srv) // 2]:6.1f}, "
                        f"{ops[len(ops) // 2]:>7,.0f} ops/s (best {ops[-1]:,.0f}), busy "
                        f"{sorted(d['busy'] for d in ds)[len(ds) // 2]:.0%}")


def part3(report, target, workload, ids, seconds):
    report.line("part 3: cProfile of poolbench's side, 8 workers, sampler off: top 25 by "
                "tottime (profiled, so slower)")
    for name in STRATEGIES:
        profs: list[cProfile.Profile] = []
        d = poolbench_side(target, name, seconds, workload, ids, None, profile=profs)
        buf = io.StringIO()
        pstats.Stats(*profs, stream=buf).sort_stats("tottime").print_stats(25)
        report.line(f"## {name}: {d['ops']} ops")
        for line in buf.getvalue().splitlines():
            if line.strip() and ("{" in line or "/" in line or "ncalls" in line):
                report.line("   " + line.strip()[:200])


if __name__ == "__main__":
    main()

"""A script workload's cost against the CRUD path (issue 18's targets), on one embedded server.

1. A script with one point read runs within 10% of the CRUD read phase's throughput on the
   same strategy: the script is ``\\set id random(first, last)`` then the CRUD read's own
   ``SELECT id, username, email, created_at FROM users WHERE id = :id``, over the same
   rows, sent with ``-M prepared`` (the CRUD path's drivers prepare a repeated statement:
   psycopg after 5 uses, asyncpg always). Same workers, pool and seconds; the two runs
   alternate ``--rounds`` times and the median of the rounds' ratios is reported.
2. The script interpreter's own cost per statement: ``ScriptRunner.run()`` (every
   ``\\set`` evaluated, each statement's SQL and parameters made) timed over many runs in
   this process, without I/O, for the point read above and for pgbench's tpcb-like
   built-in; best of 5, divided by the statements per run. That is what the interpreter
   adds before a driver sends a statement; the executor's own per-operation cost is
   ``overhead.py``'s "own work" figure.

Run: python bench/scripts.py [--seconds 3] [--rounds 3] [--workers 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import Report

from poolbench import RunConfig, run
from poolbench.check.calibrate import create_rows
from poolbench.db.admin import AdminSession
from poolbench.db.server import EmbeddedServer
from poolbench.db.workload import RunTable, delete_own_rows, ensure_table, new_run_tag
from poolbench.workloads.script.builtin import BUILTIN_SCRIPTS
from poolbench.workloads.script.interp import ScriptRunner
from poolbench.workloads.script.parser import ParamStyle, parse_script
from poolbench.workloads.scripted import load_scripts

STRATEGIES = ("psycopg:pool", "asyncpg:pool", "psycopg2:threaded")


def crud_read(target, strategy: str, args: argparse.Namespace) -> float:
    results = run(RunConfig(target=target, strategies=(strategy,), rows=1,
                            workers=args.workers, pool_min=args.workers,
                            pool_max=args.workers, warmup=1, warmup_s=1.0, trials=1,
                            duration_s=args.seconds, out_dir=None))
    return results.strategies[0].phase("read").throughput_ops_s


def script_read(target, strategy: str, script: Path, args: argparse.Namespace) -> float:
    results = run(RunConfig(target=target, strategies=(strategy,), rows=1,
                            workers=args.workers, pool_min=args.workers,
                            pool_max=args.workers, warmup=1, warmup_s=1.0, trials=1,
                            duration_s=args.seconds, out_dir=None,
                            scripts=load_scripts([f"{script}@1"], []), protocol="prepared"))
    return results.strategies[0].phase("mix").throughput_ops_s


def interpreter_ns_per_statement(text: str, name: str) -> tuple[float, int]:
    script = parse_script(text, name=name)
    statements = sum(1 for c in script.commands if type(c).__name__ == "SqlCommand")
    runner = ScriptRunner(script, client_id=0, scale=1, seed=0, style=ParamStyle.FORMAT)
    runs = 20_000
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(runs):
            runner.run()
        best = min(best, (time.perf_counter_ns() - start) / runs)
    return best / statements, statements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="CRUD/script alternations")
    parser.add_argument("--workers", type=int, default=8, help="workers (= pool size)")
    args = parser.parse_args()
    report = Report("scripts")
    report.line(f"# {args.workers} workers and pool, {args.seconds:g} s per measurement, "
                f"{args.rounds} rounds of CRUD read / script read per strategy")
    with EmbeddedServer(max_connections=100) as server, \
            tempfile.TemporaryDirectory() as tmp:
        target = server.target
        admin = AdminSession(target)
        admin.call(lambda c: ensure_table(c, "users"))
        workload = RunTable("users", new_run_tag())
        first, last = create_rows(admin, workload, 10_000)
        read_text = (f"\\set id random({first}, {last})\n"
                     "SELECT id, username, email, created_at FROM users WHERE id = :id;\n")
        script = Path(tmp) / "point_read.sql"
        script.write_text(read_text)
        for strategy in STRATEGIES:
            ratios = []
            for _ in range(args.rounds):
                crud = crud_read(target, strategy, args)
                mine = script_read(target, strategy, script, args)
                ratios.append(mine / crud)
                report.line(f"  {strategy:<18} CRUD read {crud:>9,.0f} ops/s, script read "
                            f"{mine:>9,.0f} ops/s = {mine / crud:.2f}x")
            report.line(f"{strategy}: script read / CRUD read, median of {args.rounds} rounds: "
                        f"{statistics.median(ratios):.2f}x (target >= 0.90x)")
        admin.call(lambda c: delete_own_rows(c, "users", workload.prefix))
        admin.close()
    for name, text in (("point read", read_text), ("tpcb-like", BUILTIN_SCRIPTS["tpcb-like"])):
        ns, statements = interpreter_ns_per_statement(text, name)
        report.line(f"interpreter, {name} ({statements} statements per run): {ns / 1000:.2f} µs "
                    "per statement, best of 5 (target <= 2)")
    report.save()


if __name__ == "__main__":
    main()
